"""tests/up/test_up.py — `moda up` + `moda status` with all five real services.

usage: test_up.py MODA_BINARY WORKDIR

Checks (each bounded by a deadline, never hangs; exit 1 on the first failure):
 1. a service that cannot start (bad extra argument for moda-label) -> `moda up` exits 1,
    names "label" and prints its log tail; the registry it had started is gone;
 2. synthetic camera: `moda status --json` shows all five up and infer frames_processed > 0;
 3. SIGKILL children (label, ingest, infer, label again): the supervisor restarts each (new
    pid, restarts counted, Health answers again), the second crash waits twice the backoff,
    and frames keep flowing;
 4. SIGTERM `moda up` -> exit 0, every child pid gone, up.json removed, `moda status` exits 1
    and reports DOWN.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MODA, WORK = sys.argv[1], sys.argv[2]
T0 = time.time()


def log(*a):
    print("[%5.1fs]" % (time.time() - T0), *a, flush=True)


def fail(msg):
    log("FAIL:", msg)
    raise SystemExit(1)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def status(run_dir):
    p = subprocess.run([MODA, "status", "--json", "--run-dir", run_dir, "--timeout-ms", "1500"],
                       capture_output=True, text=True, timeout=20)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, None


def state(run_dir):
    try:
        with open(os.path.join(run_dir, "up.json")) as f:
            return {s["name"]: s for s in json.load(f)["services"]}
    except (OSError, ValueError):
        return {}


def wait_for(what, fn, timeout):
    end = time.time() + timeout
    while time.time() < end:
        r = fn()
        if r:
            return r
        time.sleep(0.3)
    fail("timed out after %.0f s waiting for %s" % (timeout, what))


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    run_dir = tempfile.mkdtemp(prefix="mu", dir="/tmp")  # short: ipc paths < 100 chars
    procs = []
    try:
        # 1. a service that fails to start is named, with its log
        p = subprocess.Popen([MODA, "up", "--data", WORK + "/bad", "--run-dir", run_dir,
                              "--label-args", "--no-such-flag 1", "--start-timeout-ms", "20000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        out, err = p.communicate(timeout=30)
        if p.returncode != 1 or "label failed to start" not in err or "no-such-flag" not in err:
            fail("bad label args: rc %s, stderr:\n%s" % (p.returncode, err))
        if "registry" not in out:
            fail("registry should have started first:\n" + out)
        if os.path.exists(os.path.join(run_dir, "up.json")):
            fail("up.json left behind after a failed start")
        reg_pid = int(out.split("registry pid")[1].split()[0])
        if alive(reg_pid):
            fail("registry pid %d still running after the failed start" % reg_pid)
        log("ok: failed start names the service:", err.splitlines()[0])

        # 2. the whole pipeline with a synthetic camera
        up_log = open(os.path.join(WORK, "up.out"), "w")
        conf = os.path.join(WORK, "up.conf")
        with open(conf, "w") as f:  # --config FILE: the same keys as the command line
            f.write("# moda up test\ncamera = synthetic:64x48\nfps = 5\nbackoff_ms = 200\n"
                    "stop_timeout_ms = 5000\n")
        up = subprocess.Popen([MODA, "up", "--config", conf, "--data", WORK + "/data",
                               "--run-dir", run_dir], stdout=up_log, stderr=subprocess.STDOUT)
        procs.append(up)

        def pipeline_up():
            if up.poll() is not None:
                fail("moda up exited early with %s; see %s/up.out" % (up.returncode, WORK))
            rc, s = status(run_dir)
            if rc != 0 or not s or not s["all_up"]:
                return None
            c = s["services"]["infer"]["counters"]
            return s if c.get("frames_processed", 0) > 0 else None

        s = wait_for("all five up and infer frames_processed > 0", pipeline_up, 45)
        c = s["services"]["infer"]["counters"]
        log("ok: all up; infer frames_in %d processed %d dropped %d, p50 %s us" %
            (c.get("frames_in", -1), c.get("frames_processed", -1), c.get("frames_dropped", -1),
             c.get("latency_p50_us")))
        for name in ("registry", "label", "train", "infer", "ingest"):
            if s["services"][name]["pid"] <= 0 or not alive(s["services"][name]["pid"]):
                fail("%s pid in status is not alive" % name)
        txt = subprocess.run([MODA, "status", "--run-dir", run_dir], capture_output=True, text=True,
                             timeout=20)
        if (txt.returncode != 0 or "cam0" not in txt.stdout or "active bank" not in txt.stdout
                or "synthetic:64x48" not in open(os.path.join(WORK, "up.out")).read()):
            fail("text status:\n" + txt.stdout + txt.stderr)

        # 3. SIGKILL children: the supervisor restarts them
        all_pids = set()
        for victim in ("label", "ingest", "infer", "label"):
            st = state(run_dir)
            old = st[victim]["pid"]
            all_pids.update(v["pid"] for v in st.values())
            want = st[victim]["restarts"] + 1
            os.kill(old, signal.SIGKILL)
            t = time.time()

            def restarted():
                n = state(run_dir).get(victim)
                if not n or n["pid"] in (0, old) or n["restarts"] < want:
                    return None
                rc, s = status(run_dir)
                return s if s and s["services"][victim]["up"] else None

            s = wait_for("%s restarted" % victim, restarted, 20)
            if alive(old):
                fail("old %s pid %d still alive" % (victim, old))
            log("ok: %s SIGKILLed (pid %d) -> restarted as pid %d, serving after %.2f s" %
                (victim, old, s["services"][victim]["pid"], time.time() - t))
        out = open(os.path.join(WORK, "up.out")).read()
        if "label (pid" not in out or "restarting in 0.2 s" not in out or "restarting in 0.4 s" not in out:
            fail("expected restart messages with doubling backoff (0.2 s, then 0.4 s):\n" + out)
        log("ok: second crash of label waited 0.4 s (backoff doubles)")
        before = s["services"]["infer"]["counters"].get("frames_processed", 0)
        wait_for("frames flowing after restarts", lambda: (status(run_dir)[1] or {"services": {"infer": {
            "counters": {}}}})["services"]["infer"].get("counters", {}).get("frames_processed", 0) > before, 20)
        log("ok: frames still flowing after restarts")

        # 4. SIGTERM stops everything, exit 0
        st = state(run_dir)
        all_pids.update(v["pid"] for v in st.values())
        up.send_signal(signal.SIGTERM)
        t = time.time()
        try:
            rc = up.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail("moda up did not exit within 20 s of SIGTERM")
        if rc != 0:
            fail("moda up exit status %d after SIGTERM" % rc)
        t_stop = time.time() - t
        left = [p for p in all_pids if p > 0 and alive(p)]
        if left:
            fail("children still alive after moda up exited: %s" % left)
        if os.path.exists(os.path.join(run_dir, "up.json")):
            fail("up.json not removed")
        rc, s = status(run_dir)
        if rc != 1 or not s or s["all_up"] or s["services"]["infer"]["up"]:
            fail("status after stop: rc %d %s" % (rc, s))
        log("ok: SIGTERM -> exit 0 in %.2f s, %d child pids gone, status exits 1 (DOWN)" %
            (t_stop, len(all_pids)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in state(run_dir).values():
            if s.get("pid", 0) > 0 and alive(s["pid"]):
                os.kill(s["pid"], signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)
    log("all checks passed")


main()
