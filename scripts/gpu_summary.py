"""Collects what scripts/gpu_check.sh measured into one summary.json (called after every step, and at the end).

Reads, in the work folder: steps.tsv (name, rc, start, end, limit, command), each step's JSON (startup-cold,
startup-warm, device-check, ours-3m, peer-3m, ours-100m, peer-100m), gpu.txt; the device samples in
OUT/gpu.csv (epoch seconds, memory.used MiB, utilisation %); the pipeline's run folder. Standard library only.
"""
import argparse, json, os, time


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--t0", type=float, required=True)
    a = ap.parse_args()
    w = lambda name: os.path.join(a.work, name)

    samples = []
    try:
        for line in open(os.path.join(a.out, "gpu.csv")):
            parts = [p.strip() for p in line.split(",")]
            try:
                samples.append((float(parts[0]), float(parts[1]), float(parts[2])))
            except (ValueError, IndexError):
                pass
    except OSError:
        pass
    idle = samples[0][1] if samples else None

    steps = {}
    try:
        rows = [l.rstrip("\n").split("\t") for l in open(w("steps.tsv")) if l.strip()]
    except OSError:
        rows = []
    for name, rc, start, end, limit, *cmd in rows:
        if rc == "skipped":
            steps[name] = {"rc": None, "skipped": "budget spent"}
            continue
        start, end, rc = float(start), float(end), int(rc)
        inside = [s for s in samples if start <= s[0] <= end]
        steps[name] = {
            "rc": rc,
            "ok": rc == 0,
            "timed_out": rc in (124, 137),
            "wall_s": round(end - start, 2),
            "limit_s": int(limit),
            "command": cmd[0] if cmd else "",
        }
        if a.device == "cuda" and inside:
            steps[name]["peak_device_mib"] = max(s[1] for s in inside)
            steps[name]["mean_utilization_pct"] = round(sum(s[2] for s in inside) / len(inside), 1)

    def peak_mib(step):
        return steps.get(step, {}).get("peak_device_mib")

    cold, warm = load(w("startup-cold.json")), load(w("startup-warm.json"))
    startup = {"cold": cold, "warm": warm}
    if os.path.exists(w("caches.txt")):
        startup["cache_bytes_after_cold"] = {
            l.split()[1]: int(l.split()[0]) for l in open(w("caches.txt")) if len(l.split()) == 2
        }
    if cold and warm:
        for k in ("to_first_token_s", "to_first_step_s", "first_token_s", "first_step_s"):
            startup[f"cold_over_warm_{k}"] = ratio(cold.get(k), warm.get(k))

    bench = {}
    for preset, ours_name, peer_name in (("bench-3m", "ours-3m", "peer-3m"), ("paper-100m", "ours-100m", "peer-100m")):
        ours, peer = load(w(ours_name + ".json")), load(w(peer_name + ".json"))
        entry = {"ours": ours, "peer": peer}
        if ours:
            entry["ours"] = dict(ours, peak_device_mib=peak_mib(ours_name))
        if peer:
            entry["peer"] = dict(peer, peak_device_mib=peak_mib(peer_name))
        if ours and peer:
            entry["train_ratio_ours_over_peer"] = ratio(ours.get("train_tokens_per_s"), peer.get("train_tokens_per_s"))
            entry["sample_ratio_ours_over_peer"] = ratio(ours.get("sample_tokens_per_s"), peer.get("sample_tokens_per_s"))
            entry["peak_device_memory_ratio_ours_over_peer"] = ratio(peak_mib(ours_name), peak_mib(peer_name))
        bench[preset] = entry

    run = w("run")
    pipeline = {"run_dir": run}
    stages = os.path.join(run, "stages")
    if os.path.isdir(stages):
        pipeline["stages_done"] = sorted(s for s in os.listdir(stages) if os.path.exists(os.path.join(stages, s, "DONE")))
        pipeline["stage_status"] = {}
        for s in sorted(os.listdir(stages)):
            o = load(os.path.join(stages, s, "outcome.json"))
            if o:
                pipeline["stage_status"][s] = {"status": o.get("status"), "elapsed_s": o.get("elapsed_s"),
                                               "message": o.get("message")}
        report = load(os.path.join(stages, "eval", "out", "report", "report.json"))
        if report:
            pipeline["eval"] = {m["model"]: m.get("overall") for m in report.get("models", [])}
        rl = load(os.path.join(stages, "rl", "out", "report", "report.json"))
        if rl:
            pipeline["rl"] = {k: rl.get(k) for k in ("time", "stage_seconds", "compute")}

    gpu = open(w("gpu.txt")).read().strip() if os.path.exists(w("gpu.txt")) else None
    summary = {
        "device": a.device,
        "machine": gpu,
        "idle_device_mib": idle if a.device == "cuda" else None,
        "autotune": open(w("autotune.txt")).read().strip() if os.path.exists(w("autotune.txt")) else None,
        "budget_s": a.budget,
        "elapsed_s": round(time.time() - a.t0, 1),
        "steps": steps,
        "startup": startup,
        "device_check": load(w("device-check.json")),
        "bench": bench,
        "pipeline": pipeline,
        "notes": [
            "peak_device_mib: the largest nvidia-smi memory.used sample (every 0.2 s, whole GPU: CUDA context "
            "and allocator pools included) while the step ran; the peer's own peak_device_bytes is torch's "
            "max_memory_allocated (tensors only).",
            "ratios are ours / peer on the same GPU in the same call.",
        ],
    }
    tmp = os.path.join(a.out, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(a.out, "summary.json"))


if __name__ == "__main__":
    main()
