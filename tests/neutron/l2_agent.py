#!/usr/bin/python3
"""A stand-in for neutron-openvswitch-agent, for xdhcp's integration tests.

Run by tests/src/neutron.rs (see the doc comment of `L2Agent` there for why
not the real agent). One process serves every host the tests ask for:

- the hosts are the lines of HOSTS_FILE (re-read every cycle; the harness
  appends to it); for each it sends `report_state` (agent_type "Open vSwitch
  agent", the configurations the ML2 openvswitch mechanism driver needs to
  bind flat/vlan/vxlan segments) every REPORT_INTERVAL seconds;
- like the real agent it watches the Interfaces of the integration bridge:
  one with external_ids:iface-id=<port id> is a device. When a device
  appears, or a `port_update` fanout cast names it, it asks the server for
  the port's binding host (REST) and, when that host is one of its hosts,
  does what the real agent does for that host:
  get_devices_details_list_and_failed_devices (which also binds a port that
  failed to bind before the agent was alive) then update_device_list with
  the device up (or down when admin_state_up is False). A device that goes
  away is reported down. Failures are retried on the next cycle.

It sends what neutron.agent.rpc (PluginReportStateAPI, PluginApi) sends,
over oslo.messaging with Neutron's context serializer, but with plain
clients: a call that gets no answer (the broker or the server restarting)
times out after RPC_TIMEOUT seconds and is retried on the next cycle,
instead of neutron_lib's backing-off client sleeping for up to a minute.

Usage: l2_agent.py CONFIG_FILE HOSTS_FILE BRIDGE OVSDB API_URL
(CONFIG_FILE sets [DEFAULT] transport_url and [AGENT] report_interval.)
"""

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from oslo_config import cfg
import oslo_messaging

from neutron.conf.agent import common as agent_conf
from neutron_lib import constants as n_const
from neutron_lib import context as n_context
from neutron_lib import rpc as n_rpc

CYCLE = 0.3
# neutron_lib.constants.DEAD_VLAN_TAG: where new ports wait to be wired.
DEAD_VLAN = 4095
# The real agent's rpc_response_timeout: a busy neutron-server answers a
# batch of device updates in tens of seconds, and a call that times out is
# retried whole (with 10 s and batches of 200, 300 ports of a burst never
# got past the retries).
RPC_TIMEOUT = 60
# Devices handled per cycle: one get_devices_details_list call for thousands
# of new devices outlasts RPC_TIMEOUT and would be retried for ever (the real
# agent also works through them in rounds).
BATCH = 50


class Rpc:
    """The agent side of the calls the OVS agent makes (neutron.agent.rpc)."""

    def __init__(self, transport):
        serializer = n_rpc.RequestContextSerializer()
        make = getattr(oslo_messaging, "get_rpc_client", None)
        if make is None:  # older oslo.messaging
            make = oslo_messaging.RPCClient

        def client(topic, version):
            return make(transport,
                        oslo_messaging.Target(topic=topic, version=version),
                        serializer=serializer, timeout=RPC_TIMEOUT)

        self.reports = client("q-reports-plugin", "1.2")
        self.plugin = client("q-plugin", "1.9")
        self.ctx = n_context.get_admin_context_without_session()

    def report_state(self, state):
        state = dict(state, uuid=str(uuid.uuid4()))
        return self.reports.prepare(version="1.2").call(
            self.ctx, "report_state",
            agent_state={"agent_state": state},
            time=datetime.datetime.utcnow().strftime(
                n_const.ISO8601_TIME_FORMAT))

    def get_devices_details_list_and_failed_devices(self, devices, agent_id,
                                                    host):
        return self.plugin.prepare(version="1.5").call(
            self.ctx, "get_devices_details_list_and_failed_devices",
            devices=devices, agent_id=agent_id, host=host)

    def update_device_list(self, devices_up, devices_down, agent_id, host):
        return self.plugin.prepare(version="1.9").call(
            self.ctx, "update_device_list", devices_up=devices_up,
            devices_down=devices_down, agent_id=agent_id, host=host,
            refresh_tunnels=False)


def log(msg):
    print("%s l2-agent: %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Notifications:
    """Endpoint of the q-agent-notifier-port-update fanout."""

    target = oslo_messaging.Target(version="1.9")

    def __init__(self):
        self.lock = threading.Lock()
        self.dirty = set()

    def port_update(self, context, **kwargs):
        port = kwargs.get("port") or {}
        if port.get("id"):
            with self.lock:
                self.dirty.add(port["id"])

    def take(self):
        with self.lock:
            d, self.dirty = self.dirty, set()
            return d


def bridge_devices(ovsdb, bridge):
    """({iface-id: interface name} for the bridge's Interfaces with an
    ofport (like the real agent, ports OVS failed to open are skipped),
    [names of the ports in the dead VLAN])."""
    out = subprocess.run(
        ["ovs-vsctl", "--db=" + ovsdb, "--timeout=5", "--format=json",
         "--", "--columns=name,ports", "find", "Bridge", "name=" + bridge,
         "--", "--columns=_uuid,name,interfaces,tag", "list", "Port",
         "--", "--columns=_uuid,name,ofport,external_ids", "list",
         "Interface"],
        check=True, capture_output=True, text=True).stdout
    tables = [json.loads(t) for t in out.split("\n") if t.strip()]
    bridges, ports, ifaces = tables

    def uuids(cell):
        # ["uuid", X] or ["set", [["uuid", X], ...]]
        if cell[0] == "uuid":
            return [cell[1]]
        return [u[1] for u in cell[1]]

    def col(table, row, name):
        return row[table["headings"].index(name)]

    if not bridges["data"]:
        return {}, []
    port_ids = set(uuids(col(bridges, bridges["data"][0], "ports")))
    iface_ids = set()
    dead = []
    for row in ports["data"]:
        if col(ports, row, "_uuid")[1] in port_ids:
            iface_ids.update(uuids(col(ports, row, "interfaces")))
            if col(ports, row, "tag") == DEAD_VLAN:
                dead.append(col(ports, row, "name"))
    devices = {}
    for row in ifaces["data"]:
        if col(ifaces, row, "_uuid")[1] not in iface_ids:
            continue
        ofport = col(ifaces, row, "ofport")
        if not isinstance(ofport, int) or ofport <= 0:
            continue
        ext = dict(col(ifaces, row, "external_ids")[1])
        if ext.get("iface-id"):
            devices[ext["iface-id"]] = col(ifaces, row, "name")
    return devices, dead


def wire(ovsdb, names):
    """Takes ports out of the dead VLAN, where neutron-dhcp-agent (and os-vif)
    plug them until the L2 agent gives them their network's local VLAN; on
    this bridge, one segment, that is no VLAN at all."""
    cmd = ["ovs-vsctl", "--db=" + ovsdb, "--timeout=5"]
    for name in names:
        cmd += ["--", "clear", "Port", name, "tag", "trunks"]
    subprocess.run(cmd, check=True, capture_output=True)
    log("wired %s (out of VLAN %d)" % (sorted(names), DEAD_VLAN))


def binding_hosts(api, port_ids):
    """{port id: binding:host_id} of the ports that exist."""
    ids = sorted(port_ids)
    found = {}
    for i in range(0, len(ids), 100):  # keep URLs well under 8 KiB
        q = "&".join("id=" + p for p in ids[i:i + 100])
        url = "%s/v2.0/ports?%s&fields=id&fields=binding:host_id" % (api, q)
        with urllib.request.urlopen(url, timeout=30) as r:
            for p in json.load(r)["ports"]:
                found[p["id"]] = p.get("binding:host_id") or ""
    return found


def main():
    config_file, hosts_file, bridge, ovsdb, api = sys.argv[1:6]
    oslo_messaging.set_transport_defaults("neutron")
    agent_conf.register_agent_state_opts_helper(cfg.CONF)
    cfg.CONF(["--config-file", config_file], project="neutron")
    n_rpc.init(cfg.CONF)
    rpc = Rpc(n_rpc.TRANSPORT)
    interval = cfg.CONF.AGENT.report_interval

    notes = Notifications()
    server = oslo_messaging.get_rpc_server(
        n_rpc.TRANSPORT,
        oslo_messaging.Target(topic="q-agent-notifier-port-update",
                              server="xdhcp-l2-%d" % os.getpid()),
        [notes], executor="threading",
        serializer=n_rpc.RequestContextSerializer(),
        access_policy=oslo_messaging.DefaultRPCAccessPolicy)
    server.start()

    states = {}      # host -> agent_state
    last_report = {}  # host -> time of the last successful report
    reported = {}    # port id -> (host, up) last reported successfully
    pending = set()  # port ids to (re)process
    known = {}       # iface-id -> interface name, last cycle
    log("started: bridge %s, ovsdb %s, api %s" % (bridge, ovsdb, api))
    while True:
        try:
            with open(hosts_file) as f:
                hosts = [h.strip() for h in f if h.strip()]
        except FileNotFoundError:
            hosts = []
        for host in hosts:
            if host not in states:
                states[host] = {
                    "binary": "neutron-openvswitch-agent",
                    "host": host,
                    "topic": "N/A",
                    "agent_type": "Open vSwitch agent",
                    "start_flag": True,
                    "configurations": {
                        "bridge_mappings": {"physnet1": bridge},
                        "tunnel_types": ["vxlan"],
                        "tunneling_ip": "127.0.0.1",
                        "l2_population": False,
                        "arp_responder_enabled": False,
                        "enable_distributed_routing": False,
                        "datapath_type": "netdev",
                        "integration_bridge": bridge,
                        "ovs_hybrid_plug": False,
                        "devices": 0,
                    },
                }
                # Ports bound before this host's agent was alive failed to
                # bind: look at every device again.
                pending.update(known)
            state = states[host]
            if time.time() - last_report.get(host, 0) >= interval:
                state["configurations"]["devices"] = sum(
                    1 for h, _ in reported.values() if h == host)
                try:
                    r = rpc.report_state(state)
                    if "start_flag" in state:
                        log("report_state %s: %s" % (host, r))
                    state.pop("start_flag", None)
                    last_report[host] = time.time()
                except Exception as e:  # broker down: retried next cycle
                    log("report_state %s failed: %r" % (host, e))
                    last_report[host] = time.time() - interval + 1

        try:
            devices, dead = bridge_devices(ovsdb, bridge)
            if dead:
                wire(ovsdb, dead)
        except Exception as e:
            log("ovs-vsctl failed: %r" % e)
            time.sleep(1)
            continue
        pending.update(set(devices) - set(known))
        pending.update(notes.take() & set(devices))
        gone = set(known) - set(devices)
        known = devices
        for port_id in gone:
            pending.discard(port_id)
            host, up = reported.pop(port_id, (None, False))
            if host and up:
                try:
                    rpc.update_device_list([], [port_id],
                                           "ovs-agent-%s" % host, host)
                except Exception as e:
                    log("devices_down %s failed: %r" % (port_id, e))

        if pending and hosts:
            started = time.time()
            work = set(sorted(pending)[:BATCH])
            pending -= work
            try:
                bound = binding_hosts(api, work)
            except Exception as e:
                log("GET ports failed: %r" % e)
                pending |= work
                bound = {}
            by_host = {}
            for port_id, host in bound.items():
                if host in states:
                    by_host.setdefault(host, []).append(port_id)
            for host, port_ids in by_host.items():
                agent_id = "ovs-agent-%s" % host
                try:
                    d = rpc.get_devices_details_list_and_failed_devices(
                        port_ids, agent_id, host)
                    up = [x["device"] for x in d["devices"]
                          if "network_id" in x and x["admin_state_up"]]
                    down = [x["device"] for x in d["devices"]
                            if "network_id" in x and not x["admin_state_up"]]
                    # Not bound (yet): wait for a port_update.
                    r = rpc.update_device_list(up, down, agent_id, host)
                    for p in r["devices_up"]:
                        reported[p] = (host, True)
                    for p in r["devices_down"]:
                        reported[p] = (host, False)
                    retry = (set(d["failed_devices"])
                             | set(r["failed_devices_up"])
                             | set(r["failed_devices_down"]))
                    pending |= retry
                    log("%s: up %s down %s retry %s (%.0f ms)" % (
                        host, sorted(r["devices_up"]),
                        sorted(r["devices_down"]), sorted(retry),
                        (time.time() - started) * 1e3))
                except Exception as e:
                    log("device update for %s failed: %r" % (host, e))
                    pending.update(port_ids)
        time.sleep(CYCLE)


if __name__ == "__main__":
    main()
