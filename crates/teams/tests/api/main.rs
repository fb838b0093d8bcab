//! Integration tests of the teams service over real HTTP on port 0, each against a fresh
//! SQLite file and, when `TEST_DATABASE_URL` is set, a fresh PostgreSQL database.

mod support;

mod accept;
mod audit;
mod browser;
mod config;
mod delivery;
mod features;
mod hostile;
mod invitations;
mod mail;
mod openapi;
mod races;
mod rate_limit;
mod teams;
