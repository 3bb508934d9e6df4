//! The console: the pages of the admin server's `/ui`, rendered on the server from the data of
//! their `/api` twins (the types in [`data`]), with the console's own small style and one
//! script that reloads live pages. Nothing is fetched from elsewhere, and every page works
//! without the script.
//!
//! | page | twin | module |
//! |------|------|--------|
//! | `/ui/services` | `/api/services` | [`services`] |
//! | `/ui/services/{ns}/{name}` | `/api/services/{ns}/{name}` | [`service`] |
//! | `/ui/graph?namespace=NS` | `/api/graph?namespace=NS` | [`graph`] |
//! | `/ui/traces`, `/ui/traces/{id}` | `/api/traces`, `/api/traces/{id}` | [`traces`] |
//! | `/ui/proxies` | `/proxies` | [`proxies`] |
//! | `/ui/vet`, `/ui/objects/{kind}/{ns}/{name}` | `/api/vet`, `/status` | [`vet`] |
//!
//! Pages are pure functions of their data, so golden tests pin them and a benchmark times
//! them at thousands of Services (`console-bench`).

#![warn(clippy::too_many_lines)]

pub mod data;
pub mod graph;
pub mod html;
pub mod proxies;
pub mod service;
pub mod services;
pub mod traces;
pub mod vet;
