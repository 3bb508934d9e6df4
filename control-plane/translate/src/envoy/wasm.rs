//! Wasm HTTP filters: a module fetched from the control plane by its digest, reloaded after
//! a trap.

use super::*;
use crate::ir::{EndpointIr, WasmFilterIr};
use crate::policy::MODULE_CLUSTER;
use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, BackoffStrategy, HttpUri, RemoteDataSource, async_data_source, http_uri,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{
    FailurePolicy, PluginConfig, ReloadConfig, VmConfig, plugin_config,
};
use envoy_types::pb::google::protobuf::StringValue;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

/// An `envoy.filters.http.wasm` filter running a module fetched from the control plane by its
/// digest (Envoy checks the digest again), on the V8 runtime.
pub fn wasm_filter(f: &WasmFilterIr, server: Option<&EndpointIr>) -> HttpFilter {
    let uri = match server {
        Some(s) if s.address.contains(':') => {
            format!("http://[{}]:{}/wasm/{}", s.address, s.port, f.sha256)
        }
        Some(s) => format!("http://{}:{}/wasm/{}", s.address, s.port, f.sha256),
        None => format!("http://module-server.invalid/wasm/{}", f.sha256),
    };
    let configuration = match &f.configuration {
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    };
    let plugin = PluginConfig {
        name: f.name.clone(),
        configuration: Some(pack_any(StringValue {
            value: configuration,
        })),
        // A module that traps is reloaded (after a backoff), rather than left down until
        // Envoy restarts; requests meanwhile get 503 (or skip it, when it fails open).
        failure_policy: if f.fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailReload
        } as i32,
        reload_config: (!f.fail_open).then(|| ReloadConfig {
            backoff: Some(BackoffStrategy {
                base_interval: Some(duration_ms(1_000)),
                max_interval: Some(duration_ms(10_000)),
            }),
        }),
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            vm_id: f.vm_id.clone(),
            runtime: "envoy.wasm.runtime.v8".to_string(),
            code: Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                    http_uri: Some(HttpUri {
                        uri,
                        timeout: Some(duration_ms(10_000)),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                            MODULE_CLUSTER.to_string(),
                        )),
                    }),
                    sha256: f.sha256.clone(),
                    retry_policy: Some(envoy_types::pb::envoy::config::core::v3::RetryPolicy {
                        retry_back_off: Some(BackoffStrategy {
                            base_interval: Some(duration_ms(200)),
                            max_interval: Some(duration_ms(2_000)),
                        }),
                        num_retries: Some(UInt32Value { value: 10 }),
                        ..Default::default()
                    }),
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    HttpFilter {
        name: f.name.clone(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Wasm {
            config: Some(plugin),
        }))),
        disabled: f.disabled,
        ..Default::default()
    }
}
