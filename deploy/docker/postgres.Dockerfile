# postgres.Dockerfile — PostgreSQL 15 on Debian 12 with the wal2json output plugin, for
# deploy/docker/compose.yml. The official image carries the PostgreSQL apt repository, whose
# postgresql-15-wal2json matches its server; postgresql.conf (beside this file) includes
# deploy/postgresql.conf.sample, the settings walcast needs.
FROM postgres:15-bookworm
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15-wal2json \
 && rm -rf /var/lib/apt/lists/*
