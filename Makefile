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
export APP_VERSION LAB_APP_HOSTS LAB_HTTP_PORT

INVENTORY ?= inventories/lab
PLAYBOOK  := ansible-playbook -i $(INVENTORY)

.PHONY: help venv docker images image lab lab-down test lint

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: ## Install the control node's toolchain into .venv (only when requirements.txt changed)
	@scripts/venv.sh $(VENV) requirements.txt

docker: ## Make sure a Docker engine answers (install and start Debian's docker.io if not)
	@scripts/ensure-docker.sh

images: docker ## Build the local base images (skipped when their recipe is unchanged)
	@scripts/base-images.sh

image: images ## Build the service image sprintpoints:$(APP_VERSION)
	docker build --build-arg APP_VERSION=$(APP_VERSION) -t sprintpoints:$(APP_VERSION) .

lab: venv image ## Deploy the whole stack to the local lab and print its URL
	$(PLAYBOOK) playbooks/lab_up.yml
	$(PLAYBOOK) playbooks/site.yml -e app_version=$(APP_VERSION)
	@echo; echo "The lab serves sprintpoints $(APP_VERSION) at http://127.0.0.1:$(LAB_HTTP_PORT)/"

lab-down: venv docker ## Remove everything the lab created, and nothing else
	$(PLAYBOOK) playbooks/lab_down.yml

test: venv images ## Run every test: lint, app tests, every molecule scenario; prints a summary
	@scripts/test.sh

lint: venv ## ruff, yamllint and ansible-lint (production profile)
	@ONLY=lint scripts/test.sh
