-- registry: API tokens and webhook secrets. Expand-only: nullable columns and unique indexes;
-- the version before ignores them. Users and projects created before have none until an
-- operator runs `sprintpoints issue-token` (app/README.md, "Who may do what").
-- A token is stored only as its HMAC-SHA256 under TOKEN_DIGEST_KEY (hex). The webhook secret
-- is stored as given: verifying GitHub's signature needs the secret itself. Only registry's
-- database role can read this table; web fetches a project's secret through registry's
-- internal API when a delivery arrives.
ALTER TABLE users ADD COLUMN token_digest text;
ALTER TABLE projects ADD COLUMN admin_token_digest text;
ALTER TABLE projects ADD COLUMN webhook_secret text;

-- Unique, so a digest names one holder; small tables, so a plain CREATE INDEX is fine.
CREATE UNIQUE INDEX users_token_digest_idx ON users (token_digest);
CREATE UNIQUE INDEX projects_admin_token_digest_idx ON projects (admin_token_digest);
