# The two commands that matter: `make lab` (deploy the whole stack to the local lab and
# print its URL) and `make test` (run every test). `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

APP_VERSION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
LAB_APP_HOSTS ?= 2
LAB_HTTP_PORT ?= 8080
LAB_HTTPS_PORT ?= 8443
LAB_PROMETHEUS_PORT ?= 9090
LAB_ALERTMANAGER_PORT ?= 9093
LAB_SUBNET ?= 10.213.0.0/24
export APP_VERSION LAB_APP_HOSTS LAB_HTTP_PORT LAB_HTTPS_PORT LAB_PROMETHEUS_PORT LAB_ALERTMANAGER_PORT LAB_SUBNET

INVENTORY ?= inventories/lab
PLAYBOOK  := ansible-playbook -i $(INVENTORY)

.PHONY: help venv docker images image lab lab-down test test-fresh lint dev dev-down

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: ## Install the control node's toolchain into .venv (only when requirements.txt changed)
	@scripts/venv.sh $(VENV) requirements.txt

docker: ## Make sure a Docker engine answers (install and start Debian's docker.io if not)
	@scripts/ensure-docker.sh

images: docker ## Build the local base images (skipped when their recipe is unchanged)
	@scripts/base-images.sh

image: images ## Build the service image sprintpoints:$(APP_VERSION)
	app/scripts/build-image.sh $(APP_VERSION)

lab: venv image ## Deploy the whole stack to the local lab and print its URL
	$(PLAYBOOK) playbooks/lab_up.yml
	@# --flush-cache: a host lab_up re-created or moved has new facts (its address, the gateway its
	@# firewall admits SSH from); the operator playbooks keep using the cache this run fills.
	$(PLAYBOOK) playbooks/site.yml --flush-cache -e app_version=$(APP_VERSION)
	@echo; echo "The lab serves sprintpoints $(APP_VERSION) at https://127.0.0.1:$(LAB_HTTPS_PORT)/"
	@echo "  (its certificate authority: $(CURDIR)/.lab/secrets/tls/ca.crt, e.g. curl --cacert ...;" \
	  "http://127.0.0.1:$(LAB_HTTP_PORT)/ redirects there)"
	@echo "Consoles: http://127.0.0.1:$(LAB_PROMETHEUS_PORT)/consoles/sprintpoints.html" \
	  " Alertmanager: http://127.0.0.1:$(LAB_ALERTMANAGER_PORT)/"

lab-down: venv docker ## Remove everything the lab created, and nothing else
	$(PLAYBOOK) playbooks/lab_down.yml

test: ## Run every test: lint, app tests, every molecule scenario; prints a summary with times
	@scripts/test.sh

test-fresh: ## Remove the lab, molecule leftovers, the project's images, venvs and caches; then make test
	@scripts/fresh.sh
	@scripts/test.sh

lint: venv ## ruff, yamllint and ansible-lint (production profile)
	@ONLY=lint scripts/test.sh

# --- operators ------------------------------------------------------------------------
.PHONY: rollout rollback status logs exec backup restore drain enable unlock bench-logs bench-idle bench-rollout bench-tls faults
rollout: venv ## Roll APP_VERSION across the app hosts, canary first, no failed request
	$(PLAYBOOK) playbooks/rolling_update.yml -e app_version=$(APP_VERSION)

rollback: venv ## Roll back to the previous version kept on the hosts
	$(PLAYBOOK) playbooks/rollback.yml

status: venv ## Versions, health and HAProxy state per host; the lock; the last audit entries
	$(PLAYBOOK) playbooks/status.yml

logs: venv ## Central logs in time order: REQUEST_ID= | SERVICE= | HOST= [SINCE=10m] [LINES=100]
	$(PLAYBOOK) playbooks/logs.yml -e service='$(SERVICE)' -e host='$(HOST)' -e lines='$(or $(LINES),100)' \
	  -e since='$(SINCE)' -e request_id='$(REQUEST_ID)'

bench-logs: venv ## Benchmark on the lab: delay from a line written on any host to it readable centrally
	$(BIN)/python scripts/bench-log-shipping.py

bench-idle: venv ## Benchmark on the lab: CPU the lab uses at rest (no load, no rollout)
	$(BIN)/python scripts/bench-idle.py

faults: venv ## Fault drill on the lab under load, a table of what each fault cost (FAULTS="redeem-kill ..." for some; every fault: into the README)
	$(BIN)/python scripts/fault-drill.py --readme README.md $(FAULTS)

bench-rollout: venv ## Benchmark on the lab: one rollout of a new image under load (BENCH_ARGS=--no-load | --summary)
	$(BIN)/python scripts/bench-rollout.py $(BENCH_ARGS)

bench-tls: venv ## Benchmark on the lab: HTTPS against plain HTTP, requests/s and p99 at 16 clients
	$(BIN)/python scripts/bench-tls.py $(BENCH_ARGS)

exec: venv ## Run CMD in SERVICE's container on HOST, e.g. CMD="sprintpoints migrate"
	$(PLAYBOOK) playbooks/exec.yml -e host=$(HOST) -e service=$(SERVICE)
# CMD reaches the playbook through the environment, unexpanded: quotes and $ pass through intact.
exec: export SPRINTPOINTS_EXEC_CMD = $(value CMD)

backup: venv ## pg_dump every database now, and copy the dumps to backup_copy_host
	$(PLAYBOOK) playbooks/backup.yml

restore: venv ## Restore DATABASE from its newest dump (or DUMP=, or FROM=copy: the backup host's) into TARGET (default <db>_restored; a live one needs FORCE=yes)
	$(PLAYBOOK) playbooks/restore.yml -e database=$(DATABASE) $(if $(DUMP),-e dump=$(DUMP)) $(if $(FROM),-e source=$(FROM)) $(if $(TARGET),-e target=$(TARGET)) $(if $(FORCE),-e force=$(FORCE))

drain: venv ## Drain HOST on every load balancer, for maintenance
	$(PLAYBOOK) playbooks/drain.yml -e host=$(HOST)

enable: venv ## Put HOST back on every load balancer
	$(PLAYBOOK) playbooks/enable.yml -e host=$(HOST)

unlock: venv ## Break a deploy lock left by a crashed run: LOCK_ID= (the id the refusal printed)
	$(PLAYBOOK) playbooks/unlock.yml -e lock_id=$(LOCK_ID)

# --- the app --------------------------------------------------------------------------
.PHONY: test-app bench
dev: images ## The compose development stack (installs docker-compose if missing); prints its URL
	@scripts/dev.sh up

dev-down: docker ## Stop the development stack and drop its database volume
	@scripts/dev.sh down

test-app: ## The app's tests alone (real PostgreSQL, real services, headless Chromium)
	app/scripts/test.sh

bench: ## Benchmark reads and writes through gunicorn; image size; code-only rebuild time
	app/scripts/test.sh --collect-only -q >/dev/null
	app/.venv/bin/python app/bench/bench.py
