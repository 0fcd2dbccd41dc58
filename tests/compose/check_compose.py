#!/usr/bin/python3
"""check_compose.py — validate compose/docker-compose.yml against the real moda binaries.

usage: check_compose.py BIN_DIR COMPOSE_DIR [--run WORK_DIR --model FILE]

Static checks (always; no container engine needed):
  * every service runs a program that exists in BIN_DIR and that compose/build-image.sh
    copies into the image; the healthcheck runs `moda health tcp://127.0.0.1:<its --bind port>`;
  * every command-line option and every key of the --config file it names (compose/config/,
    via the service's ./config mount) is an option of that binary (parsed from its --help)
    and its value has the type and range --help states;
  * every tcp endpoint a service connects to is bound by the service it names, on the socket
    the protocol requires (e.g. infer --registry-pub -> registry --pub); published ports are
    bound; host ports are unique; camera ids are unique;
  * --data (LMDB) and --model live on named volumes, every named volume is declared;
    restart: unless-stopped and stop_signal: SIGTERM everywhere;
  * the commented second-camera example, uncommented, passes the same checks;
  * `docker-compose config -q` accepts the file (only where docker-compose is installed).
With --run: starts every service of the file here as a plain process, with its exact
arguments except that endpoints become 127.0.0.1 ports, container paths become folders in
WORK_DIR (compose/config for /etc/moda, the model file for the model volume); each must
answer `moda health`, infer must count frames from cam1 (ingest -> infer over tcp), and
SIGTERM must stop each with exit 0. Exit 0 = all checks passed, 1 = a check failed.
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml  # python3-yaml (Debian), in ./moda.sh's package list

FAILS = []


def fail(msg):
    FAILS.append(msg)
    print("FAIL: " + msg)


# Which socket each connecting option must reach: (binary, option) -> (binary, option).
CONNECTS = {
    ("moda-infer", "registry"): ("moda-registry", "bind"),
    ("moda-infer", "registry_pub"): ("moda-registry", "pub"),
    ("moda-infer", "label"): ("moda-label", "hard_case_bind"),
    ("moda-ingest", "connect"): ("moda-infer", "frames"),
    ("moda-train", "label"): ("moda-label", "bind"),
    ("moda-train", "registry"): ("moda-registry", "bind"),
}
# Options that hold an LMDB environment / the weights: must be on a named volume.
ON_VOLUME = {("moda-registry", "data"), ("moda-label", "data"), ("moda-infer", "model"),
             ("moda-train", "state_dir"), ("moda-train", "model")}


def norm(key):
    return key.replace("-", "_")


def parse_help(path):
    return parse_help_argv([path])


def parse_help_argv(prog):
    """--help of a moda program (argv prefix) -> {key: (type, lo, hi, description)}."""
    path = " ".join(prog)
    out = subprocess.run(prog + ["--help"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError("%s --help exited %d" % (path, out.returncode))
    keys = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^  --([a-z0-9-]+)(?: (\S+))?\s{2,}(.*)$", line)
        if not m or m.group(1) in ("config", "set", "help"):
            continue
        desc = m.group(3)
        t = re.search(r"\((endpoint|string|int|double|bool)(?:, (-?[0-9.e+]+)\.\.(-?[0-9.e+]+))?, default [^()]*\)$",
                      desc)
        if not t:
            raise RuntimeError("%s --help: cannot read the type of --%s: %r" % (path, m.group(1), line))
        lo = float(t.group(2)) if t.group(2) else None
        hi = float(t.group(3)) if t.group(3) else None
        keys[norm(m.group(1))] = (t.group(1), lo, hi, desc)
    if not keys:
        raise RuntimeError("%s --help lists no options" % path)
    return keys


EP_RE = re.compile(r"^(tcp://([^:/]+|\*|\[[0-9a-fA-F:]+\]):(\d+)|ipc://\S+|inproc://\S+)$")


def check_value(where, key, value, spec):
    typ, lo, hi, _ = spec
    if typ == "int":
        if not re.fullmatch(r"-?\d+", value):
            return fail("%s: --%s %r is not an integer" % (where, key, value))
        v = float(value)
    elif typ == "double":
        try:
            v = float(value)
        except ValueError:
            return fail("%s: --%s %r is not a number" % (where, key, value))
    elif typ == "bool":
        if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            fail("%s: --%s %r is not a bool" % (where, key, value))
        return
    elif typ == "endpoint":
        if not EP_RE.match(value):
            fail("%s: --%s %r is not an endpoint (tcp://HOST:PORT, ipc://PATH)" % (where, key, value))
        return
    else:
        return
    if lo is not None and not (lo <= v <= hi):
        fail("%s: --%s %s outside %g..%g" % (where, key, value, lo, hi))


def parse_argv(where, argv, spec):
    """argv (after the program) -> ordered list of (key, value); checks names and values."""
    opts = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            fail("%s: unexpected positional argument %r (services take none)" % (where, a))
            i += 1
            continue
        name, eq, val = a[2:].partition("=")
        key = norm(name)
        if key == "config":
            if not eq:
                i += 1
                val = argv[i] if i < len(argv) else ""
            opts.append(("config", val))
            i += 1
            continue
        if key not in spec and key.startswith("no_") and key[3:] in spec and spec[key[3:]][0] == "bool":
            opts.append((key[3:], "false"))
            i += 1
            continue
        if key not in spec:
            fail("%s: option --%s is not an option of this program (see its --help)" % (where, name))
            i += 1 if eq or i + 1 >= len(argv) or argv[i + 1].startswith("--") else 2
            continue
        if not eq:
            if spec[key][0] == "bool" and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
                val = "true"
            elif i + 1 < len(argv):
                i += 1
                val = argv[i]
            else:
                fail("%s: --%s needs a value" % (where, name))
                val = ""
        check_value(where, key, val, spec[key])
        opts.append((key, val))
        i += 1
    return opts


def parse_conf(where, path, spec):
    """A `key = value` config file -> [(key, value)], each checked like a flag."""
    opts = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = re.sub(r"\s#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            k, eq, v = line.partition("=")
            k, v = k.strip(), v.strip()
            w = "%s (%s:%d)" % (where, os.path.basename(path), n)
            if not eq:
                fail("%s: not a `key = value` line" % w)
            elif norm(k) not in spec:
                fail("%s: unknown key %r for this program" % (w, k))
            else:
                check_value(w, k, v, spec[norm(k)])
                opts.append((norm(k), v))
    return opts


def uncomment_example(text, name):
    """The commented `# NAME:` service block, uncommented in place."""
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l == "  # %s:" % name), None)
    if start is None:
        return None
    i = start
    while i < len(lines) and lines[i].startswith("  # "):
        lines[i] = "  " + lines[i][4:]
        i += 1
    return "\n".join(lines)


def substitute(text):
    """Compose variable substitution: ${VAR:-default}, ${VAR} (must be set)."""
    def sub(m):
        if m.group(1) in os.environ and (os.environ[m.group(1)] or m.group(2) is None):
            return os.environ[m.group(1)]
        if m.group(2) is None:
            fail("variable ${%s} has no default" % m.group(1))
            return ""
        return m.group(3)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", sub, text)


def volume_mounts(svc):
    """service -> [(source, target, kind)] kind: named | bind."""
    out = []
    for v in svc.get("volumes", []):
        parts = v.split(":") if isinstance(v, str) else [v.get("source", ""), v.get("target", "")]
        src, dst = parts[0], parts[1]
        out.append((src, dst, "bind" if src.startswith((".", "/", "~")) else "named"))
    return out


def mount_of(path, mounts):
    best = None
    for m in mounts:
        if path == m[1] or path.startswith(m[1].rstrip("/") + "/"):
            if best is None or len(m[1]) > len(best[1]):
                best = m
    return best


def check_file(doc, bin_dir, compose_dir, image_bins, label):
    """All static checks on one parsed compose document. Returns the per-service model."""
    services = doc.get("services") or {}
    declared = set((doc.get("volumes") or {}).keys())
    if not services:
        fail("%s: no services" % label)
        return {}
    helps = {}
    model = {}
    for name, svc in services.items():
        where = "%s: service %s" % (label, name)
        cmd = svc.get("command")
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])
        if not argv:
            fail("%s: no command" % where)
            continue
        prog = argv[0]
        path = os.path.join(bin_dir, prog)
        if not os.access(path, os.X_OK):
            fail("%s: runs %s, which is not in %s" % (where, prog, bin_dir))
            continue
        if prog not in image_bins:
            fail("%s: %s is not copied into the image by build-image.sh (BINS)" % (where, prog))
        if prog not in helps:
            helps[prog] = parse_help(path)
        spec = helps[prog]
        mounts = volume_mounts(svc)
        opts = parse_argv(where, argv[1:], spec)
        conf_opts = []
        for k, v in opts:
            if k != "config":
                continue
            m = mount_of(v, mounts)
            if not m or m[2] != "bind":
                fail("%s: --config %s is not on a bind mount of compose/" % (where, v))
                continue
            host = os.path.normpath(os.path.join(compose_dir, m[0], os.path.relpath(v, m[1])))
            if not os.path.isfile(host):
                fail("%s: --config %s -> %s does not exist" % (where, v, host))
                continue
            conf_opts += parse_conf(where, host, spec)
        eff = dict(conf_opts)
        eff.update({k: v for k, v in opts if k != "config"})
        for src, dst, kind in mounts:
            if kind == "named" and src not in declared:
                fail("%s: volume %r is not declared under top-level volumes:" % (where, src))
            if kind == "bind" and src.startswith(".") and not os.path.exists(os.path.join(compose_dir, src)) \
                    and label == "docker-compose.yml":
                fail("%s: bind mount source %s does not exist next to the compose file" % (where, src))
        for p, key in ON_VOLUME:
            if p == prog:
                v = eff.get(key, "")
                m = mount_of(v, mounts) if v.startswith("/") else None
                if not m or m[2] != "named":
                    fail("%s: --%s %r must be an absolute path on a named volume (state would be lost "
                         "with the container)" % (where, key, v))
        if svc.get("restart") != "unless-stopped":
            fail("%s: restart is %r, want unless-stopped" % (where, svc.get("restart")))
        if svc.get("stop_signal") != "SIGTERM":
            fail("%s: stop_signal is %r, want SIGTERM" % (where, svc.get("stop_signal")))
        binds = {}
        for k, v in eff.items():
            m = re.match(r"^tcp://([^:]+):(\d+)$", v)
            if m and m.group(1) in ("*", "0.0.0.0"):
                if "bound" not in spec[k][3]:
                    fail("%s: --%s binds %s but this option connects (its --help does not say bound)"
                         % (where, k, v))
                binds[k] = int(m.group(2))
        if "bind" not in binds:
            fail("%s: --bind must be tcp://*:PORT (control socket reachable from other containers), got %r"
                 % (where, eff.get("bind", "(default ipc)")))
        for k, v in eff.items():
            if spec[k][0] in ("endpoint", "string") and v.startswith("ipc://"):
                fail("%s: --%s %s is an ipc endpoint: containers do not share /tmp; use tcp" % (where, k, v))
        hc = (svc.get("healthcheck") or {}).get("test")
        hc = shlex.split(hc) if isinstance(hc, str) else list(hc or [])
        if hc[:1] in (["CMD"], ["CMD-SHELL"]):
            hc = hc[1:] if hc[0] == "CMD" else shlex.split(hc[1])
        if len(hc) < 3 or hc[0] != "moda" or hc[1] != "health":
            fail("%s: healthcheck must run `moda health tcp://127.0.0.1:PORT`, got %r" % (where, hc))
        else:
            if not os.access(os.path.join(bin_dir, "moda"), os.X_OK):
                fail("%s: healthcheck runs moda, which is not in %s" % (where, bin_dir))
            want = "tcp://127.0.0.1:%s" % binds.get("bind")
            if hc[2] != want:
                fail("%s: healthcheck asks %s, but the control socket is %s" % (where, hc[2], want))
            if "moda health" not in helps:
                helps["moda health"] = parse_help_argv([os.path.join(bin_dir, "moda"), "health"])
            parse_argv(where + " healthcheck", hc[3:], helps["moda health"])
        model[name] = {"prog": prog, "argv": argv, "opts": eff, "binds": binds, "mounts": mounts,
                       "ports": svc.get("ports", [])}
    # wiring between services
    for name, s in model.items():
        where = "%s: service %s" % (label, name)
        for (p, k), (tp, tk) in CONNECTS.items():
            if p != s["prog"]:
                continue
            v = s["opts"].get(k, "")
            m = re.match(r"^tcp://([^:*]+):(\d+)$", v)
            if not m:
                fail("%s: --%s must connect to tcp://SERVICE:PORT, got %r" % (where, k, v))
                continue
            host, port = m.group(1), int(m.group(2))
            t = model.get(host)
            if t is None:
                fail("%s: --%s %s: no service named %r in the file" % (where, k, v, host))
            elif t["prog"] != tp:
                fail("%s: --%s %s: %s runs %s, not %s" % (where, k, v, host, t["prog"], tp))
            elif t["binds"].get(tk) != port:
                fail("%s: --%s %s: %s binds its --%s on port %s, not %d"
                     % (where, k, v, host, tk.replace("_", "-"), t["binds"].get(tk), port))
    host_ports = {}
    cams = {}
    for name, s in model.items():
        where = "%s: service %s" % (label, name)
        for p in s["ports"]:
            parts = str(p).split(":")
            cport = int(parts[-1].split("/")[0])
            hkey = (parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) >= 2 else parts[-1])
            if cport not in s["binds"].values():
                fail("%s: publishes port %d, which it does not bind" % (where, cport))
            if hkey in host_ports:
                fail("%s: host port %s also published by %s" % (where, ":".join(hkey), host_ports[hkey]))
            host_ports[hkey] = name
        if s["prog"] == "moda-ingest":
            cam = s["opts"].get("camera_id", "")
            if not cam:
                fail("%s: no --camera-id" % where)
            elif cam in cams:
                fail("%s: camera id %s already used by %s" % (where, cam, cams[cam]))
            cams[cam] = name
    return model


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(bin_dir, ep, timeout_ms=1000):
    r = subprocess.run([os.path.join(bin_dir, "moda"), "health", ep, "--json", "--timeout-ms", str(timeout_ms)],
                       capture_output=True, text=True, timeout=timeout_ms / 1000 + 10)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def run_services(model, bin_dir, compose_dir, work, model_file):
    """Start every service here with its compose arguments, endpoints and paths mapped."""
    ports = {}
    for name, s in model.items():
        for k, p in s["binds"].items():
            ports[(name, p)] = free_port()

    def host_path(name, v):
        m = mount_of(v, model[name]["mounts"])
        if not m:
            return v
        rel = os.path.relpath(v, m[1])
        if m[2] == "bind":
            return os.path.normpath(os.path.join(compose_dir, m[0], rel))
        if m[0] == "model":  # filled from the image: the default model file
            return model_file if rel == os.path.basename(model_file) else os.path.join(
                os.path.dirname(model_file), rel)
        d = os.path.join(work, "volumes", m[0])
        os.makedirs(d, exist_ok=True)
        return os.path.normpath(os.path.join(d, rel))

    def mapv(name, v):
        m = re.match(r"^tcp://([^:]+):(\d+)$", v)
        if m:
            host = name if m.group(1) in ("*", "0.0.0.0") else m.group(1)
            return "tcp://127.0.0.1:%d" % ports[(host, int(m.group(2)))]
        if v.startswith("/"):
            return host_path(name, v)
        return v

    procs = {}
    logs = {}
    for name, s in model.items():
        argv = [os.path.join(bin_dir, s["prog"])] + [mapv(name, a) for a in s["argv"][1:]]
        logs[name] = open(os.path.join(work, name + ".log"), "w+")
        procs[name] = subprocess.Popen(argv, stdout=logs[name], stderr=subprocess.STDOUT)
        print("started %s: %s" % (name, " ".join(argv)))

    def tail(name):
        logs[name].flush()
        logs[name].seek(0)
        return "".join(logs[name].readlines()[-8:])

    try:
        deadline = time.time() + 45
        pending = set(model)
        while pending and time.time() < deadline:
            asks = {}
            for name in sorted(pending):
                if procs[name].poll() is not None:
                    fail("run: %s exited with status %d during start (its arguments are refused?):\n%s"
                         % (name, procs[name].returncode, tail(name)))
                    pending.discard(name)
                    continue
                ep = "tcp://127.0.0.1:%d" % ports[(name, model[name]["binds"]["bind"])]
                asks[name] = subprocess.Popen([os.path.join(bin_dir, "moda"), "health", ep, "--json",
                                               "--timeout-ms", "1000"], stdout=subprocess.PIPE,
                                               stderr=subprocess.DEVNULL, text=True)
            for name, a in asks.items():  # all services asked at once: one round <= ~1 s
                out = a.communicate(timeout=30)[0]
                h = json.loads(out) if a.returncode == 0 else None
                if h and h.get("state") in ("serving", "degraded"):
                    print("health %s: %s, uptime %.1f s" % (name, h["state"], h["uptime_us"] / 1e6))
                    pending.discard(name)
            time.sleep(0.2)
        for name in pending:
            fail("run: %s does not answer Health in 45 s:\n%s" % (name, tail(name)))
        infer = [n for n, s in model.items() if s["prog"] == "moda-infer"]
        cams = [s["opts"]["camera_id"] for s in model.values() if s["prog"] == "moda-ingest"]
        if infer and cams and not FAILS:
            ep = "tcp://127.0.0.1:%d" % ports[(infer[0], model[infer[0]]["binds"]["bind"])]
            deadline = time.time() + 30
            seen = {}
            while time.time() < deadline:
                h = health(bin_dir, ep, 1000) or {}
                seen = {c: h.get("counters", {}).get("in." + c, 0) for c in cams}
                if all(seen.values()):
                    break
                time.sleep(0.5)
            print("frames at infer per camera: %s" % seen)
            for c, n in seen.items():
                if not n:
                    fail("run: infer counted no frames from camera %s in 30 s (ingest --connect -> infer "
                         "--frames over tcp)" % c)
    finally:
        for name in reversed(list(model)):
            if procs[name].poll() is None:
                procs[name].send_signal(signal.SIGTERM)
        for name in reversed(list(model)):
            try:
                rc = procs[name].wait(timeout=15)
                if rc != 0:
                    fail("run: %s exited %d on SIGTERM:\n%s" % (name, rc, tail(name)))
            except subprocess.TimeoutExpired:
                procs[name].kill()
                procs[name].wait()
                fail("run: %s did not stop within 15 s of SIGTERM" % name)


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    bin_dir, compose_dir = args[0], args[1]
    run_dir = args[args.index("--run") + 1] if "--run" in args else None
    model_file = args[args.index("--model") + 1] if "--model" in args else None
    with open(os.path.join(compose_dir, "docker-compose.yml")) as f:
        text = f.read()
    with open(os.path.join(compose_dir, "build-image.sh")) as f:
        m = re.search(r"^BINS=\(([^)]*)\)", f.read(), re.M)
    image_bins = set(m.group(1).split()) if m else set()
    if not image_bins:
        fail("build-image.sh: no BINS=(...) list")
    doc = yaml.safe_load(substitute(text))
    model = check_file(doc, bin_dir, compose_dir, image_bins, "docker-compose.yml")
    example = uncomment_example(text, "ingest-line2")
    if example is None:
        fail("docker-compose.yml: the commented second-camera example (# ingest-line2:) is missing")
    else:
        ex = yaml.safe_load(substitute(example))
        if "ingest-line2" not in (ex.get("services") or {}):
            fail("the uncommented ingest-line2 example is not a service")
        check_file(ex, bin_dir, compose_dir, image_bins, "docker-compose.yml + ingest-line2 example")
    print("static: %d services checked: %s" % (len(model), ", ".join(model)))
    dc = shutil.which("docker-compose")
    if dc:  # its own schema check, where it is installed (./moda.sh compose installs it)
        r = subprocess.run([dc, "-f", os.path.join(compose_dir, "docker-compose.yml"), "config", "-q"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            fail("docker-compose config -q refuses the file:\n" + r.stderr[-2000:])
        else:
            print("docker-compose config -q: ok")
    if run_dir and not FAILS:
        os.makedirs(run_dir, exist_ok=True)
        if not model_file or not os.path.isfile(model_file):
            fail("--run: model file %r missing (./moda.sh setup makes it)" % model_file)
        else:
            run_services(model, bin_dir, compose_dir, run_dir, model_file)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
