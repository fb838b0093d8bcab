//! Integration tests of the teams service over real HTTP on port 0, each against a fresh
//! SQLite file and, when `TEST_DATABASE_URL` is set, a fresh PostgreSQL database.

mod support;

mod accept;
mod browser;
mod config;
mod hostile;
mod invitations;
mod mail;
mod openapi;
mod rate_limit;
mod teams;
