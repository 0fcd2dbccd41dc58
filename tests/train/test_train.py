"""tests/train/test_train.py — moda-train with real moda-label and moda-registry processes.

usage: test_train.py SCENARIO BIN_DIR SUB_BANK DATA_DIR WORKDIR
  SCENARIO  auto | refuse | manual | kill | two | device
  BIN_DIR   folder with moda (CLI), moda-train, moda-label, moda-registry
  SUB_BANK  the train_test_sub_bank helper (prints every BankChanged)
  DATA_DIR  ../shared/data/cl/magtile

Each scenario imports 8 train + 4 holdout magtile images (`moda label import` of a folder of
links, split.txt from the data) and runs moda-train with tiny settings (1-3 epochs):
  (auto, manual and kill run with --gate-min-gain -100: 1-2 epochs do not beat zero-shot SAM yet)
  auto    3 malformed requests during training answered with ErrorReply, counted;
          job runs -> version put with the gate metrics -> promoted to active, BankChanged
          "bank active 1" seen; no second job without new labels; SIGTERM exits 0.
  refuse  --gate-min-gain 100 (cannot be met) -> refused, nothing put or promoted, the log
          has event=job_refused with the numbers; no retry without new labels.
  manual  --policy manual, and the process dies (fault injection MODA_TRAIN_FAULT=kill_after_put)
          right after the registry acknowledged the put, before its state file says so ->
          restart -> the job is found in the registry (job_recovered), not rerun: exactly one
          version, `active` not set.
  kill    SIGTERM in the middle of an epoch -> exit 0 within the stop wait, state RUNNING;
          restart, SIGKILL during training -> restart -> job completes, exactly one version.
  two     (--min-new 6) magtile -> version 1; then 4 + 2 nuclei labels -> a second job on a
          two-domain candidate (selector retrained, holdout taps): either version 2 with
          both domains, magtile's adapter bit-identical and its holdout IoU within the
          margin, or a refusal logged as forgetting.
  device  (no label store, no registry, a few seconds) runtime selection: `--device tpu`
          exits 2 naming the value; `--set device=auto` logs event=device with its reason and
          serves with the model loaded; without a GPU (auto chose the CPU: "no CUDA device")
          `--device cuda` exits 2 at startup naming that reason;
          `--device cpu` serves and logs device=cpu requested=cpu.
Exit 1 on the first failed check (each wait has a deadline).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SCEN, BIN, SUB, DATA, WORK = sys.argv[1], *map(os.path.abspath, sys.argv[2:6])
MODA = os.path.join(BIN, "moda")
T0 = time.time()
PROCS = []


def log(*a):
    print("[%6.1fs]" % (time.time() - T0), *a, flush=True)


def fail(msg):
    log("FAIL:", msg)
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    for f in ("train.log",):
        path = os.path.join(WORK, f)
        if os.path.exists(path):
            print("---- tail of", path)
            print("".join(open(path).readlines()[-40:]))
    raise SystemExit(1)


def start(args, logname, env=None):
    f = open(os.path.join(WORK, logname), "ab")
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)
    PROCS.append(p)
    return p


def run(args, timeout=60):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def health(ep):
    rc, out, _ = run([MODA, "health", ep, "--json", "--timeout-ms", "2000"], timeout=20)
    try:
        return json.loads(out)
    except ValueError:
        return None


def counters(ep):
    h = health(ep)
    return h["counters"] if h else {}


def wait_for(what, fn, timeout):
    end = time.time() + timeout
    while time.time() < end:
        r = fn()
        if r:
            return r
        time.sleep(0.25)
    fail("timed out after %.0f s waiting for %s" % (timeout, what))


def versions(reg):
    rc, out, err = run([MODA, "registry", "list", "--json", "--endpoint", reg])
    if rc:
        fail("registry list: %s" % err)
    return json.loads(out)


def make_data(dst, src=None, ntrain=8, ntest=4):
    """ntrain train + ntest holdout images of a domain folder as links, with a split.txt."""
    src = src or DATA
    split = [l.split() for l in open(os.path.join(src, "split.txt")) if l.strip()]
    train = [i for i, s in split if s == "train"][:ntrain]
    test = [i for i, s in split if s == "test"][:ntest]
    imgs = {os.path.splitext(f)[0]: f for f in os.listdir(os.path.join(src, "images"))}
    os.makedirs(os.path.join(dst, "images"))
    os.makedirs(os.path.join(dst, "masks"))
    with open(os.path.join(dst, "split.txt"), "w") as f:
        for i in train + test:
            os.symlink(os.path.join(src, "images", imgs[i]), os.path.join(dst, "images", imgs[i]))
            os.symlink(os.path.join(src, "masks", i + ".png"), os.path.join(dst, "masks", i + ".png"))
            f.write("%s %s\n" % (i, "train" if i in train else "test"))


def read_state():
    try:
        return json.load(open(os.path.join(WORK, "state", "state.json")))
    except (OSError, ValueError):
        return None


def metrics_of(v):
    m = v["metrics"]
    return m if isinstance(m, dict) else {x["name"]: x["value"] for x in m}


def second_domain(ep, tr, c):
    """magtile is active (version 1); 4 + 2 nuclei labels make a second job whose gate checks
    magtile for forgetting through the retrained selector."""
    vs = versions(ep["reg"])
    if c.get("versions_put") != 1 or len(vs) != 1:
        fail("first job: %s, versions %s" % (c, vs))
    nuc = os.path.join(WORK, "data", "nuclei")
    make_data(nuc, os.path.join(os.path.dirname(DATA), "nuclei"), 4, 2)
    rc, out, err = run([MODA, "label", "import", nuc, "--endpoint", ep["lab"]])
    if rc:
        fail("label import nuclei: %s %s" % (out, err))
    t = time.time()
    c = wait_for("the second job", lambda: (lambda c: c if c.get("jobs_started") == 2 and not c.get("job_running")
                                             else None)(counters(ep["train"])), 900)
    log("second job ended after %.1f s (service: %.1f s): %s" % (time.time() - t, c.get("last_job_ms", 0) / 1000.0,
        {k: v for k, v in c.items() if k.startswith(("jobs_", "versions_"))}))
    if c.get("jobs_failed"):
        fail("second job failed: %s" % (health(ep["train"]) or {}).get("last_error"))
    logtext = open(os.path.join(WORK, "train.log")).read()
    vs = versions(ep["reg"])
    if c.get("versions_put") == 2:
        v2 = [v for v in vs if v["version"] == 2][0]
        v1 = [v for v in vs if v["version"] == 1][0]
        m = metrics_of(v2)
        for k in ("active_iou.magtile", "holdout_iou.magtile", "zeroshot_iou.nuclei", "holdout_iou.nuclei",
                  "selector_train_acc", "holdout_n.magtile", "holdout_n.nuclei"):
            if k not in m:
                fail("metric %s missing: %s" % (k, m))
        drop = 100 * (m["active_iou.magtile"] - m["holdout_iou.magtile"])
        if drop > 1.0:
            fail("passed although magtile dropped %.2f points" % drop)
        if [d["name"] for d in v2["domains"]] != ["magtile", "nuclei"] or "active" not in v2["aliases"]:
            fail("version 2: %s" % v2)
        h1 = {d["name"]: d["hash"] for d in v1["domains"]}
        h2 = {d["name"]: d["hash"] for d in v2["domains"]}
        if h1["magtile"] != h2["magtile"]:
            fail("magtile adapter changed by learning nuclei")
        log("version 2 passed: magtile %.4f -> %.4f (selector), nuclei %.4f vs zero-shot %.4f, selector acc %.3f" %
            (m["active_iou.magtile"], m["holdout_iou.magtile"], m["holdout_iou.nuclei"], m["zeroshot_iou.nuclei"],
             m["selector_train_acc"]))
    else:
        line = [l for l in logtext.splitlines() if "event=job_refused" in l]
        if len(vs) != 1 or not line or "REFUSED (forgetting)" not in line[0]:
            fail("second job neither put nor refused for forgetting: %s %s" % (vs, line))
        log("version 2 refused for forgetting:", line[0][line[0].find("gate="):][:400])
    tr.send_signal(signal.SIGTERM)
    if tr.wait(timeout=10) != 0:
        fail("exit status after SIGTERM")
    log("PASS two")


def device_checks(ep):
    base = [os.path.join(BIN, "moda-train"), "--bind", ep["train"], "--label", ep["lab"], "--registry", ep["reg"],
            "--state-dir", WORK + "/state", "--stop-wait-ms", "1500"]

    def startup_error(args, logname, want):
        p = start(base + args, logname)
        try:
            code = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("%s did not exit at startup" % args)
        text = open(os.path.join(WORK, logname)).read()
        if code != 2 or want not in text:
            fail("%s: exit %s, log %r (want exit 2 and %r)" % (args, code, text, want))
        log("%s: exit 2, %s" % (" ".join(args), [l for l in text.splitlines() if "event=exit" in l][0][-160:]))

    def serve(args, logname, want):
        p = start(base + args, logname)
        wait_for("model_ready with %s" % args, lambda: counters(ep["train"]).get("model_ready") == 1, 120)
        p.send_signal(signal.SIGTERM)
        if p.wait(timeout=10) != 0:
            fail("%s: exit status after SIGTERM" % args)
        line = [l for l in open(os.path.join(WORK, logname)).read().splitlines() if "event=device" in l]
        if len(line) != 1 or want not in line[0]:
            fail("%s: event=device lines %s (want one with %r)" % (args, line, want))
        log("%s: %s" % (" ".join(args), line[0][line[0].find("event="):]))
        return line[0]

    startup_error(["--device", "tpu"], "tpu.log", "--device 'tpu': use cpu, cuda or auto")
    auto = serve(["--set", "device=auto"], "auto.log", "requested=auto reason=\"")
    if "device=cpu" in auto:
        if 'reason="no CUDA device (' not in auto:
            fail("auto chose the CPU without a known reason: %s" % auto)
        startup_error(["--device", "cuda"], "cuda.log", "--device cuda: no CUDA device (")
    serve(["--device", "cpu"], "cpu.log", "event=device device=cpu requested=cpu")
    log("PASS device")


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    run_dir = tempfile.mkdtemp(prefix="mt", dir="/tmp")  # ipc paths < 100 chars
    ep = {k: "ipc://%s/%s.sock" % (run_dir, k) for k in ("reg", "pub", "lab", "labhc", "train")}
    try:
        if SCEN == "device":
            return device_checks(ep)
        make_data(os.path.join(WORK, "data", "magtile"))
        start([os.path.join(BIN, "moda-registry"), "--data", WORK + "/reg", "--bind", ep["reg"], "--pub", ep["pub"],
               "--no-sync", "--republish-ms", "0"], "registry.log")
        start([os.path.join(BIN, "moda-label"), "--data", WORK + "/lab", "--bind", ep["lab"], "--hard-case-bind",
               ep["labhc"], "--no-sync"], "label.log")
        wait_for("registry and label", lambda: health(ep["reg"]) and health(ep["lab"]), 30)
        sub = None
        if SCEN == "auto":
            sub = subprocess.Popen([SUB, ep["pub"], "600"], stdout=subprocess.PIPE, text=True)
            PROCS.append(sub)
        rc, out, err = run([MODA, "label", "import", os.path.join(WORK, "data", "magtile"), "--endpoint", ep["lab"]])
        if rc:
            fail("label import: %s %s" % (out, err))
        log("imported:", out.strip().splitlines()[-1] if out.strip() else "")
        epochs = {"kill": "2"}.get(SCEN, "1")
        targs = [os.path.join(BIN, "moda-train"), "--bind", ep["train"], "--label", ep["lab"], "--registry", ep["reg"],
                 "--state-dir", WORK + "/state", "--min-new", "6" if SCEN == "two" else "12", "--epochs", epochs, "--poll-ms", "200",
                 "--max-holdout", "4", "--replay", "2", "--retry-ms", "1000", "--stop-wait-ms", "1500",
                 "--no-fixed-loss"]
        # 1-2 epochs on 8 images do not beat zero-shot SAM yet (docs/moda.md), so the runs that
        # test publishing accept any gain; `refuse` asks for one that cannot be met
        targs += ["--gate-min-gain", "100" if SCEN == "refuse" else "-100"]
        if SCEN == "manual":
            targs += ["--policy", "manual"]
        fault = dict(os.environ, MODA_TRAIN_FAULT="kill_after_put") if SCEN == "manual" else None
        tr = start(targs, "train.log", fault)
        t_start = time.time()

        if SCEN == "auto":
            # malformed requests while a job trains: each gets an ErrorReply, counted, still serving
            wait_for("the job to train", lambda: counters(ep["train"]).get("job_stage") in (2, 3), 300)
            rc, out, err = run([SUB, "--garbage", ep["train"]])
            c = counters(ep["train"])
            if rc or c.get("msgs_bad") != 3 or (health(ep["train"]) or {}).get("state") != "serving":
                fail("malformed requests: %s %s %s" % (out, err, c))
            log("malformed requests during training:", out.strip())

        if SCEN == "manual":
            try:
                code = tr.wait(timeout=600)
            except subprocess.TimeoutExpired:
                fail("the fault injection did not end the process")
            st = read_state()
            if code != -signal.SIGKILL or not st or st["job"]["phase"] != "putting":
                fail("after the injected crash: exit %s, state %s" % (code, st))
            if len(versions(ep["reg"])) != 1:
                fail("the put before the crash is not in the registry")
            log("killed after the acknowledged put (state: putting); restarting")
            tr = start(targs, "train.log")
            wait_for("recovery", lambda: counters(ep["train"]).get("jobs_recovered") == 1, 120)

        if SCEN == "kill":
            # SIGTERM inside an epoch: exits 0 within the stop wait, the job stays RUNNING
            wait_for("training epochs", lambda: counters(ep["train"]).get("job_stage") == 3, 300)
            time.sleep(1.0)
            t = time.time()
            tr.send_signal(signal.SIGTERM)
            try:
                code = tr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                fail("moda-train did not exit within 10 s of SIGTERM")
            log("SIGTERM during training: exit %d after %.2f s" % (code, time.time() - t))
            if code != 0:
                fail("SIGTERM exit status %d" % code)
            st = read_state()
            if not st or st["job"]["phase"] != "running":
                fail("state after SIGTERM: %s" % st)
            if versions(ep["reg"]):
                fail("a version was put by an interrupted job")
            # restart, SIGKILL during training
            tr = start(targs, "train.log")
            wait_for("training epochs after restart", lambda: counters(ep["train"]).get("job_stage") == 3, 300)
            c = counters(ep["train"])
            if c.get("jobs_restarted") != 1:
                fail("restart not counted: %s" % c)
            time.sleep(1.0)
            tr.send_signal(signal.SIGKILL)
            tr.wait()
            log("SIGKILL during training")
            st = read_state()
            if not st or st["job"]["phase"] != "running" or st["job"]["restarts"] != 1:
                fail("state after SIGKILL: %s" % st)
            if versions(ep["reg"]):
                fail("a version was put by a killed job")
            tr = start(targs, "train.log")
            t_start = time.time()

        def done():
            c = counters(ep["train"])
            return c if c.get("versions_put", 0) + c.get("jobs_refused", 0) + c.get("jobs_failed", 0) + \
                c.get("jobs_recovered", 0) >= 1 else None

        c = wait_for("the job to end", done, 600)
        if SCEN == "two":
            return second_domain(ep, tr, c)
        job_s = time.time() - t_start
        log("job ended after %.1f s (service's own job time %.1f s): %s" %
            (job_s, c.get("last_job_ms", 0) / 1000.0,
             {k: v for k, v in c.items() if k.startswith(("jobs_", "versions_"))}))
        if c.get("jobs_failed"):
            fail("job failed: %s" % (health(ep["train"]) or {}).get("last_error"))
        vs = versions(ep["reg"])
        logtext = open(os.path.join(WORK, "train.log")).read()
        if SCEN == "refuse":
            if c.get("jobs_refused") != 1 or c.get("versions_put"):
                fail("expected one refusal and no put: %s" % c)
            if vs:
                fail("refused job left versions: %s" % vs)
            line = [l for l in logtext.splitlines() if "event=job_refused" in l]
            if not line or "REFUSED" not in line[0] or "zero-shot" not in line[0]:
                fail("refusal not logged with its numbers: %s" % line)
            log("refusal logged:", line[0][line[0].find("gate="):][:300])
        else:
            if len(vs) != 1:
                fail("expected exactly one version, got %d" % len(vs))
            v = vs[0]
            m = v["metrics"]
            m = m if isinstance(m, dict) else {x["name"]: x["value"] for x in m}
            for k in ("gate_passed", "holdout_iou.magtile", "zeroshot_iou.magtile", "holdout_n.magtile",
                      "train_loss_last", "label_seq", "job_seconds"):
                if k not in m:
                    fail("metric %s missing: %s" % (k, m))
            if m["gate_passed"] != 1 or not 0 < m["holdout_iou.magtile"] <= 1 or not 0 < m["zeroshot_iou.magtile"] <= 1:
                fail("gate metrics do not show a pass: %s" % m)
            if m.get("gate_min_gain_pts") != -100 or m.get("gate_margin_pts") != 1.0:
                fail("gate settings not recorded: %s" % m)
            if m["holdout_n.magtile"] != 4:
                fail("holdout_n %s, expected 4" % m["holdout_n.magtile"])
            log("version %d: holdout IoU %.4f vs zero-shot %.4f, reason %r" %
                (v["version"], m["holdout_iou.magtile"], m["zeroshot_iou.magtile"], v["reason"]))
            if [d["name"] for d in v["domains"]] != ["magtile"]:
                fail("domains %s" % v["domains"])
            promoted = "active" in v["aliases"]
            if promoted != (SCEN != "manual"):
                fail("aliases %s with policy %s" % (v["aliases"], "manual" if SCEN == "manual" else "auto"))
            if SCEN == "manual":
                if c.get("versions_promoted") or c.get("versions_put") or c.get("jobs_started"):
                    fail("after recovery nothing may run or be put again: %s" % c)
                if "event=job_recovered" not in logtext:
                    fail("recovery not logged")
            if "event=version_put" not in logtext:
                fail("put not logged")
            if SCEN == "kill":
                if c.get("jobs_restarted") != 1:
                    fail("jobs_restarted %s after the SIGKILL restart" % c.get("jobs_restarted"))
        # no second job without new labels
        time.sleep(1.5)
        c2 = counters(ep["train"])
        if c2.get("jobs_started") != (0 if SCEN == "manual" else 1):
            fail("jobs_started %s: a job ran again without new labels" % c2.get("jobs_started"))
        st = read_state()
        if not st or st["job"]["phase"] != "idle":
            fail("state not idle after the job: %s" % st)
        # a clean stop
        tr.send_signal(signal.SIGTERM)
        try:
            code = tr.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("no exit after SIGTERM")
        if code != 0:
            fail("exit %d after SIGTERM" % code)
        if sub:
            time.sleep(0.5)
            sub.kill()
            lines = sub.stdout.read().split("\n")
            if "bank active 1" not in lines:
                fail("BankChanged for active=1 not seen: %s" % lines)
            log("BankChanged seen:", [l for l in lines if l])
        log("PASS %s" % SCEN)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


main()
