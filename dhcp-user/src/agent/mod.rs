//! `xdhcp agent`: a drop-in neutron-dhcp-agent. neutron-server schedules
//! networks to it over RPC; what it learns lands in the local port database,
//! which the daemon (run in the same process) follows into the fast path's
//! maps, exactly as for `xdhcp run`. A port is reported ready
//! (`dhcp_ready_on_ports`) once its lease is in the maps and its network's
//! device is served.
//!
//! RPC runs on a thread of its own with its own runtime, so that neither the
//! broker nor neutron-server can stall the daemon's loop, and the daemon keeps
//! serving from the database while either is down.

pub mod rpc;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    agent::rpc::{Cast, Declarations, Rpc},
    config::oslo::{self, AgentSettings, InterfaceDriver},
    daemon::health::{self, Health},
    daemon::{self, RunOptions, Served},
    netns::ovs::OvsBridge,
    neutron::model::Kind,
    plan::extra_opts,
    store::Db,
};

/// The topic DHCP agents listen on.
const TOPIC: &str = "dhcp_agent";
/// Where plugin calls go.
const PLUGIN_TOPIC: &str = "q-plugin";
/// Where report_state goes.
const REPORTS_TOPIC: &str = "q-reports-plugin";
/// How long a call waits for its reply (oslo's rpc_response_timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// dhcp_ready_on_ports batches, as the reference agent sends them.
const READY_BATCH: usize = 64;
/// When ports reported ready are reported again. neutron-server's
/// provisioning_complete removes one block and looks for the others in one
/// REPEATABLE READ transaction: when the L2 agent's and this agent's
/// completions run at the same moment, each sees the other's block and the
/// port stays BUILD/DOWN for good (seen on this machine kind: one port of 21
/// stayed DOWN with both completions logged 3 ms apart; an agent as fast as
/// this one, with VMs plugged at port creation, makes such overlaps likely). A second report removes
/// nothing and finds no block left, which sets the port ACTIVE; it is
/// harmless when the port is ACTIVE already (the callback is idempotent).
const READY_AGAIN: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(files: &[PathBuf]) -> Result<()> {
    let (settings, warnings) = oslo::load(files)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let mut cfg = settings.to_agent_config();
    for o in &settings.dnsmasq_options {
        // Refused here, naming the line, rather than port by port later.
        extra_opts::encode(&o.name, &o.value).with_context(|| {
            format!(
                "{}: line {}: dhcp-option {},{}",
                o.file.display(),
                o.line,
                o.name,
                o.value
            )
        })?;
        cfg.extra_options.push((o.name.clone(), o.value.clone()));
    }
    let ovs = match settings.interface_driver {
        Some(InterfaceDriver::OpenVSwitch) => Some(OvsBridge {
            bridge: settings.ovs_integration_bridge.clone(),
            db: settings.ovsdb_connection.clone(),
            use_veth: settings.ovs_use_veth,
        }),
        Some(InterfaceDriver::LinuxBridge) => None,
        None => bail!("[DEFAULT] interface_driver is not set (openvswitch or linuxbridge)"),
    };
    if settings.transport_url.is_none() {
        bail!("[DEFAULT] transport_url is not set: the agent cannot reach neutron-server");
    }
    let served = Served::default();
    let health = Health::default();
    health.update_agent(|a| a.report_interval = settings.report_interval);
    let opts = RunOptions {
        db: settings.db.clone(),
        bpffs: settings.bpffs.clone(),
        config: None,
        plumb: true,
        bridge: None,
        allow_empty_db: false,
        ovs,
        unplumb: true,
        metrics: settings.metrics_address,
        metrics_max_networks: settings.metrics_max_networks,
        health: health.clone(),
    };
    let rpc_served = served.clone();
    let rpc_settings = settings.clone();
    crate::spawn_runtime_thread("agent-rpc", move || async move {
        let Some(db) = open_when_there(&rpc_settings.db).await else {
            return;
        };
        Agent::new(rpc_settings, db, rpc_served, health).run().await;
    })?;
    daemon::run_with(opts, cfg, Some(served))
}

/// The daemon creates the database (or refuses to start): open it once it is there.
async fn open_when_there(path: &Path) -> Option<Db> {
    for _ in 0..600 {
        if path.exists() {
            match Db::open(path) {
                Ok(db) => return Some(db),
                Err(e) => tracing::error!("agent: {e:#}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(db = %path.display(), "agent: the database never appeared");
    None
}

/// Another agent's DHCP port on the network (device_owner network:dhcp with a
/// device_id that is not `ours`).
fn is_foreign_dhcp_port(port: &Value, ours: &str) -> bool {
    port["device_owner"] == json!(crate::neutron::model::DHCP_OWNER)
        && port["device_id"] != json!(ours)
}

/// The DHCP port's device_id as neutron forms it:
/// `dhcp<uuid5(NAMESPACE_DNS, host)>-<network id>`.
pub fn dhcp_device_id(host: &str, network_id: &str) -> String {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, host.as_bytes());
    format!("dhcp{id}-{network_id}")
}

/// A network as neutron-server sends it (with `subnets` and `ports`) as an
/// import document.
pub fn network_doc(net: &Value) -> Result<crate::neutron::model::ImportDoc> {
    let id = net["id"]
        .as_str()
        .ok_or_else(|| anyhow!("a network without an id"))?;
    let mut network = json!({"id": id});
    for key in ["name", "mtu"] {
        if !net[key].is_null() {
            network[key] = net[key].clone();
        }
    }
    let subnets: Vec<Value> = net["subnets"].as_array().cloned().unwrap_or_default();
    let ports: Vec<Value> = net["ports"].as_array().cloned().unwrap_or_default();
    let doc = json!({"networks": [network], "subnets": subnets, "ports": ports});
    crate::neutron::import::parse(&doc.to_string())
        .with_context(|| format!("network {id} from neutron-server"))
}

struct Agent {
    s: AgentSettings,
    db: Db,
    served: Served,
    /// The RPC state, for the metrics and the status file.
    health: Health,
    /// This process's agent uuid (report_state).
    uuid: String,
    /// Whether report_state's start_flag went out.
    started: bool,
    /// Networks scheduled here.
    hosted: BTreeSet<String>,
    /// Networks to fetch again (get_network_info).
    dirty: BTreeSet<String>,
    /// Everything to fetch again (get_active_networks_info), and when.
    full_resync: Option<Instant>,
    /// port id → network id: to report with dhcp_ready_on_ports once served.
    pending_ready: HashMap<String, String>,
    /// Ports reported ready, to report again (see [`READY_AGAIN`]): when, the
    /// index of the next delay, the ports.
    ready_again: Vec<(Instant, usize, Vec<String>)>,
    admin_up: bool,
    /// The last error logged per what failed (logged again only when it changes).
    errors: HashMap<String, String>,
}

impl Agent {
    fn new(s: AgentSettings, db: Db, served: Served, health: Health) -> Self {
        let hosted = db.network_ids().unwrap_or_default().into_iter().collect();
        Agent {
            s,
            db,
            served,
            health,
            uuid: uuid::Uuid::new_v4().to_string(),
            started: false,
            hosted,
            dirty: BTreeSet::new(),
            full_resync: Some(Instant::now()),
            pending_ready: HashMap::new(),
            ready_again: Vec::new(),
            admin_up: true,
            errors: HashMap::new(),
        }
    }

    fn error(&mut self, what: &str, e: &anyhow::Error) {
        let msg = format!("{e:#}");
        if self.errors.get(what) != Some(&msg) {
            tracing::error!("{what}: {msg}");
            self.errors.insert(what.to_string(), msg);
        }
    }

    fn ok(&mut self, what: &str) {
        if self.errors.remove(what).is_some() {
            tracing::info!("{what}: working again");
        }
    }

    /// Connects, serves the session, and reconnects with backoff, forever.
    async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let e = self.session().await.unwrap_err();
            self.health.update_agent(|a| a.connected = false);
            self.error("connection to the broker", &e);
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn session(&mut self) -> Result<()> {
        let url = self
            .s
            .transport_url
            .clone()
            .ok_or_else(|| anyhow!("no transport_url"))?;
        let decl = Declarations {
            exchange: self.s.control_exchange.clone(),
            durable: self.s.amqp_durable_queues,
            auto_delete: self.s.amqp_auto_delete,
            quorum: self.s.rabbit_quorum_queue,
        };
        let uris = url.amqp_uris();
        let (rpc, mut casts) = Rpc::connect(
            &uris,
            self.s.heartbeat_timeout_threshold,
            &decl,
            TOPIC,
            &self.s.host,
        )
        .await?;
        self.ok("connection to the broker");
        self.health.update_agent(|a| a.connected = true);
        tracing::info!(host = %self.s.host, broker = %rpc::redact(&uris.join(",")), "connected to the broker");
        // After a reconnect nothing learned meanwhile is known: resync.
        self.full_resync = Some(Instant::now());
        let report_every = Duration::from_secs_f64(self.s.report_interval.max(0.0));
        let mut next_report = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                cast = casts.recv() => match cast {
                    Some(cast) => self.on_cast(&rpc, cast).await,
                    None => bail!("the connection to the broker was lost"),
                },
                _ = tick.tick() => {}
            }
            if !rpc.connected() {
                bail!("the connection to the broker was lost");
            }
            if !report_every.is_zero() && Instant::now() >= next_report {
                next_report = Instant::now() + report_every;
                match self.report_state(&rpc).await {
                    Ok(()) => {
                        self.ok("report_state");
                        let now = health::unix_now_f64();
                        self.health.update_agent(|a| a.last_report_unix = Some(now));
                    }
                    Err(e) => self.error("report_state", &e),
                }
            }
            self.step(&rpc).await;
        }
    }

    /// One round of resync, fetches and ready reports.
    async fn step(&mut self, rpc: &Rpc) {
        if self.admin_up && self.full_resync.is_some_and(|t| Instant::now() >= t) {
            match self.resync_all(rpc).await {
                Ok(()) => {
                    self.full_resync = None;
                    self.ok("resync");
                    self.health.update_agent(|a| a.resyncs += 1);
                }
                Err(e) => {
                    self.error("resync", &e);
                    self.full_resync =
                        Some(Instant::now() + Duration::from_secs(self.s.resync_interval.max(1)));
                }
            }
        }
        let dirty: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        for network_id in dirty {
            let what = format!("network {network_id}");
            match self.fetch_network(rpc, &network_id).await {
                Ok(()) => self.ok(&what),
                Err(e) => {
                    self.error(&what, &e);
                    // Retried with the next full resync.
                    self.full_resync.get_or_insert(
                        Instant::now() + Duration::from_secs(self.s.resync_interval.max(1)),
                    );
                }
            }
        }
        if let Err(e) = self.report_ready(rpc).await {
            self.error("dhcp_ready_on_ports", &e);
        }
        let pending = self.pending_ready.len();
        self.health.update_agent(|a| a.pending_ready = pending);
    }

    async fn report_state(&mut self, rpc: &Rpc) -> Result<()> {
        let (networks, subnets, ports) = self.counts();
        let mut state = json!({
            "binary": "neutron-dhcp-agent",
            "host": self.s.host,
            "availability_zone": self.s.availability_zone,
            "topic": TOPIC,
            "configurations": {
                "dhcp_driver": "xdhcp",
                "dhcp_lease_duration": self.s.dhcp_lease_duration,
                "log_agent_heartbeats": false,
                "networks": networks,
                "subnets": subnets,
                "ports": ports,
            },
            "agent_type": "DHCP agent",
            "uuid": self.uuid,
        });
        if !self.started {
            state["start_flag"] = json!(true);
        }
        let time = rpc::chrono_like_now().replacen(' ', "T", 1);
        let result = rpc
            .call(
                REPORTS_TOPIC,
                "report_state",
                "1.2",
                json!({"agent_state": {"agent_state": state}, "time": time}),
                CALL_TIMEOUT,
            )
            .await?;
        self.started = true;
        if result == json!("revived") {
            tracing::info!("neutron-server says this agent was revived: resyncing everything");
            self.full_resync = Some(Instant::now());
        }
        Ok(())
    }

    fn counts(&self) -> (usize, usize, usize) {
        match self.db.snapshot() {
            Ok(s) => (s.networks.len(), s.subnets.len(), s.ports.len()),
            Err(_) => (self.hosted.len(), 0, 0),
        }
    }

    /// get_active_networks_info: the networks scheduled here, each written
    /// to the database as it is; networks no longer scheduled here removed.
    async fn resync_all(&mut self, rpc: &Rpc) -> Result<()> {
        let nets = rpc
            .call(
                PLUGIN_TOPIC,
                "get_active_networks_info",
                "1.1",
                json!({"host": self.s.host, "enable_dhcp_filter": true}),
                CALL_TIMEOUT,
            )
            .await?;
        let nets = nets
            .as_array()
            .ok_or_else(|| anyhow!("get_active_networks_info did not return a list"))?;
        let active: BTreeSet<String> = nets
            .iter()
            .filter_map(|n| n["id"].as_str().map(String::from))
            .collect();
        for gone in self.db.network_ids()? {
            if !active.contains(&gone) {
                self.forget_network(&gone)?;
            }
        }
        let mut failed = None;
        for net in nets {
            let id = net["id"].as_str().unwrap_or_default().to_string();
            let result = if net.get("ports").is_some() {
                self.take_network(rpc, net.clone()).await
            } else {
                self.fetch_network(rpc, &id).await
            };
            if let Err(e) = result {
                failed = Some(e.context(format!("network {id}")));
            }
        }
        tracing::info!(networks = active.len(), "resynced with neutron-server");
        failed.map_or(Ok(()), Err)
    }

    /// get_network_info for one network, written to the database.
    async fn fetch_network(&mut self, rpc: &Rpc, network_id: &str) -> Result<()> {
        let net = rpc
            .call(
                PLUGIN_TOPIC,
                "get_network_info",
                "1.0",
                json!({"network_id": network_id, "host": self.s.host}),
                CALL_TIMEOUT,
            )
            .await?;
        if net.is_null() {
            // Deleted, or not scheduled here any more.
            return self.forget_network(network_id);
        }
        self.take_network(rpc, net).await
    }

    /// Writes a network (with its subnets and ports) to the database, with a
    /// DHCP port of this agent on it (created or extended as neutron's agent
    /// does), and queues its ports for dhcp_ready_on_ports.
    async fn take_network(&mut self, rpc: &Rpc, mut net: Value) -> Result<()> {
        let id = net["id"]
            .as_str()
            .ok_or_else(|| anyhow!("a network without an id"))?
            .to_string();
        let dhcp_subnets: Vec<String> = net["subnets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["enable_dhcp"] == json!(true) && s["ip_version"] == json!(4))
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect();
        if !dhcp_subnets.is_empty() {
            let port = self.ensure_dhcp_port(rpc, &net, &dhcp_subnets).await?;
            let ports = net["ports"]
                .as_array_mut()
                .ok_or_else(|| anyhow!("no ports"))?;
            // With several agents per network each serves from its own DHCP
            // port; the others' are servers, not clients, and must not be
            // taken for this agent's (the store serves the first DHCP port).
            let ours = dhcp_device_id(&self.s.host, &id);
            ports.retain(|p| p["id"] != port["id"] && !is_foreign_dhcp_port(p, &ours));
            ports.push(port);
        }
        let doc = network_doc(&net)?;
        let left_out = self.db.replace_networks(&doc)?;
        self.hosted.insert(id.clone());
        for p in &doc.ports {
            if !p.is_dhcp() && !left_out.contains(&p.id) {
                self.pending_ready.insert(p.id.clone(), id.clone());
            }
        }
        Ok(())
    }

    async fn ensure_dhcp_port(
        &mut self,
        rpc: &Rpc,
        net: &Value,
        subnets: &[String],
    ) -> Result<Value> {
        let network_id = net["id"].as_str().unwrap_or_default();
        let device_id = dhcp_device_id(&self.s.host, network_id);
        let ours = net["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["device_id"] == json!(device_id))
            .cloned();
        let fixed_ips: Vec<Value> = subnets.iter().map(|s| json!({"subnet_id": s})).collect();
        match ours {
            Some(port) => {
                let has: HashSet<&str> = port["fixed_ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["subnet_id"].as_str())
                    .collect();
                if subnets.iter().all(|s| has.contains(s.as_str())) {
                    return Ok(port);
                }
                // A DHCP subnet was added: the port gets an address on it too.
                let mut ips: Vec<Value> = port["fixed_ips"].as_array().cloned().unwrap_or_default();
                ips.extend(
                    subnets
                        .iter()
                        .filter(|s| !has.contains(s.as_str()))
                        .map(|s| json!({"subnet_id": s})),
                );
                rpc.call(
                    PLUGIN_TOPIC,
                    "update_dhcp_port",
                    "1.1",
                    json!({"port_id": port["id"], "port": {"port": {"network_id": network_id, "fixed_ips": ips}}, "host": self.s.host}),
                    CALL_TIMEOUT,
                )
                .await
            }
            None => {
                let port = rpc
                    .call(
                        PLUGIN_TOPIC,
                        "create_dhcp_port",
                        "1.1",
                        json!({"port": {"port": {
                            "name": "", "admin_state_up": true, "device_id": device_id,
                            "network_id": network_id, "project_id": net["project_id"],
                            "tenant_id": net["project_id"], "fixed_ips": fixed_ips,
                        }}, "host": self.s.host}),
                        CALL_TIMEOUT,
                    )
                    .await?;
                if port.is_null() {
                    bail!("create_dhcp_port returned nothing for network {network_id}");
                }
                tracing::info!(network = network_id, port = %port["id"], "created the DHCP port");
                Ok(port)
            }
        }
    }

    /// Stops serving a network here (deleted, or scheduled away).
    fn forget_network(&mut self, network_id: &str) -> Result<()> {
        self.hosted.remove(network_id);
        self.pending_ready.retain(|_, n| n != network_id);
        match self.db.delete(Kind::Network, network_id) {
            Ok(()) => {
                tracing::info!(network = network_id, "no longer served here");
                Ok(())
            }
            Err(e) if format!("{e:#}").contains("no network") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn on_cast(&mut self, rpc: &Rpc, cast: Cast) {
        let payload = &cast.args["payload"];
        let result = match cast.method.as_str() {
            "network_create_end" | "network_update_end" => {
                if let Some(id) = payload["network"]["id"].as_str() {
                    self.dirty.insert(id.to_string());
                }
                Ok(())
            }
            "network_delete_end" => match payload["network_id"].as_str() {
                Some(id) => self.forget_network(id),
                None => Ok(()),
            },
            "subnet_create_end" | "subnet_update_end" => {
                if let Some(id) = payload["subnet"]["network_id"].as_str() {
                    self.dirty.insert(id.to_string());
                }
                Ok(())
            }
            "subnet_delete_end" => {
                if let Some(id) = payload["network_id"].as_str() {
                    self.dirty.insert(id.to_string());
                }
                Ok(())
            }
            "port_create_end" | "port_update_end" => self.take_port(&payload["port"]),
            "port_delete_end" => {
                if let Some(id) = payload["port_id"].as_str() {
                    self.pending_ready.remove(id);
                    if let Err(e) = self.db.delete(Kind::Port, id) {
                        tracing::debug!(port = id, "port_delete_end: {e:#}");
                    }
                }
                Ok(())
            }
            "agent_updated" => {
                let up = payload["admin_state_up"].as_bool().unwrap_or(true);
                self.set_admin_state(rpc, up).await
            }
            other => {
                tracing::debug!(method = other, "cast not used by xdhcp");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(method = %cast.method, "handling a cast: {e:#}; resyncing its network");
            let network = payload["port"]["network_id"]
                .as_str()
                .or(payload["network_id"].as_str())
                .map(String::from);
            match network {
                Some(n) => {
                    self.dirty.insert(n);
                }
                None => self.full_resync = Some(Instant::now()),
            }
        }
    }

    /// A port created or changed on a network served here: into the database.
    fn take_port(&mut self, port: &Value) -> Result<()> {
        let Some(network_id) = port["network_id"].as_str() else {
            bail!("a port without network_id");
        };
        if !self.hosted.contains(network_id) {
            return Ok(());
        }
        if is_foreign_dhcp_port(port, &dhcp_device_id(&self.s.host, network_id)) {
            return Ok(());
        }
        let doc = crate::neutron::import::parse(&json!({"ports": [port]}).to_string())
            .with_context(|| format!("port {} from neutron-server", port["id"]))?;
        self.db.import(&doc)?;
        for p in &doc.ports {
            if !p.is_dhcp() {
                self.pending_ready
                    .insert(p.id.clone(), network_id.to_string());
            }
        }
        Ok(())
    }

    /// admin_state_up false: stop serving and release the DHCP ports; true:
    /// serve again (a full resync).
    async fn set_admin_state(&mut self, rpc: &Rpc, up: bool) -> Result<()> {
        if up == self.admin_up {
            return Ok(());
        }
        self.admin_up = up;
        if up {
            tracing::info!("admin_state_up: serving again");
            self.full_resync = Some(Instant::now());
            return Ok(());
        }
        tracing::info!("admin_state_up false: releasing the DHCP ports and serving nothing");
        for network_id in self.db.network_ids()? {
            let device_id = dhcp_device_id(&self.s.host, &network_id);
            if let Err(e) = rpc
                .call(
                    PLUGIN_TOPIC,
                    "release_dhcp_port",
                    "1.0",
                    json!({"network_id": network_id, "device_id": device_id, "host": self.s.host}),
                    CALL_TIMEOUT,
                )
                .await
            {
                tracing::error!(network = %network_id, "release_dhcp_port: {e:#}");
            }
            self.forget_network(&network_id)?;
        }
        Ok(())
    }

    /// dhcp_ready_on_ports for the queued ports the daemon now serves.
    async fn report_ready(&mut self, rpc: &Rpc) -> Result<()> {
        if self.pending_ready.is_empty() && self.ready_again.is_empty() {
            return Ok(());
        }
        let ready: Vec<String> = {
            let served = self.served.lock().expect("the served map");
            self.pending_ready
                .iter()
                .filter(|(port, net)| served.get(*net).is_some_and(|ports| ports.contains(*port)))
                .map(|(port, _)| port.clone())
                .collect()
        };
        for batch in ready.chunks(READY_BATCH) {
            rpc.call(
                PLUGIN_TOPIC,
                "dhcp_ready_on_ports",
                "1.5",
                json!({"port_ids": batch}),
                CALL_TIMEOUT,
            )
            .await?;
            for port in batch {
                self.pending_ready.remove(port);
            }
            tracing::info!(ports = batch.len(), "reported ready (dhcp_ready_on_ports)");
            self.ready_again
                .push((Instant::now() + READY_AGAIN[0], 1, batch.to_vec()));
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_again)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.ready_again = later;
        for (_, next, ports) in due {
            let result = rpc
                .call(
                    PLUGIN_TOPIC,
                    "dhcp_ready_on_ports",
                    "1.5",
                    json!({"port_ids": ports}),
                    CALL_TIMEOUT,
                )
                .await;
            if let Some(delay) = READY_AGAIN.get(next) {
                self.ready_again
                    .push((Instant::now() + *delay, next + 1, ports));
            }
            result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_formed_as_neutron_forms_them() {
        // From a real capture: host "vm".
        assert_eq!(
            dhcp_device_id("vm", "edad63d7-2115-45b3-80bb-fd2a85bb5899"),
            "dhcpe5e61fb5-d685-5b50-9ba7-acb6e6962ef3-edad63d7-2115-45b3-80bb-fd2a85bb5899"
        );
    }

    #[test]
    fn a_network_from_neutron_server_is_an_import_document() {
        let capture: Value =
            serde_json::from_str(include_str!("../../../tests/data/get_network_info.json"))
                .unwrap();
        let doc = network_doc(&capture).unwrap();
        assert_eq!(doc.networks.len(), 1);
        assert_eq!(doc.networks[0].mtu, Some(1500));
        assert_eq!(doc.subnets.len(), 1);
        assert_eq!(doc.ports.len(), 1);
        assert_eq!(doc.ports[0].mac_address.to_string(), "fa:16:3e:11:11:11");
    }

    #[test]
    fn another_agents_dhcp_port_is_foreign_and_ours_and_vm_ports_are_not() {
        let net = "edad63d7-2115-45b3-80bb-fd2a85bb5899";
        let ours = dhcp_device_id("a", net);
        let theirs = dhcp_device_id("b", net);
        let port = |owner: &str, device: &str| json!({"device_owner": owner, "device_id": device});
        assert!(!is_foreign_dhcp_port(&port("network:dhcp", &ours), &ours));
        assert!(is_foreign_dhcp_port(&port("network:dhcp", &theirs), &ours));
        assert!(!is_foreign_dhcp_port(&port("compute:nova", "vm-1"), &ours));
    }
}
