-- registry: users, projects and memberships.
CREATE TABLE users (
    handle        text PRIMARY KEY CHECK (handle ~ '^[A-Za-z0-9-]{1,39}$'),
    display_name  text,
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    name        text PRIMARY KEY,
    repo_url    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    project     text NOT NULL REFERENCES projects (name),
    handle      text NOT NULL REFERENCES users (handle),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, handle)
);
