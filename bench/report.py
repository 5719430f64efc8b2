"""Renders the JSON lines the benchmark scenarios print as BENCHMARKS.md (markdown on stdout).

Usage: python3 bench/report.py RESULTS_FILE COMMAND MODE
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
command, mode = sys.argv[2], sys.argv[3]
note = os.environ.get("BENCH_NOTE", "")


def of(scenario, **match):
    return [r for r in rows if r["scenario"] == scenario and all(r.get(k) == v for k, v in match.items())]


def f(x, digits=2):
    return f"{x:,.{digits}f}"


def pair(values, digits=1):
    return " / ".join(f(v, digits) for v in values) if values else "–"


def met(ok):
    return "**met**" if ok else "**not met**"


cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
load_cpus, sut_cpus = os.environ.get("BENCH_LOAD_CPUS") or "any", os.environ.get("BENCH_SUT_CPUS") or "any"
out = ["# Benchmarks", "",
       "What does Ward cost? Reproduce with `bench/run` (release build, full sizes; writes this file) or",
       "`bench/run --quick` (debug build, a few seconds per scenario; checks the harness, prints only).", "",
       f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
       f"- machine: {cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, {platform.system()} {platform.release()}",
       f"- commit: {commit}{' (with local changes)' if dirty else ''}",
       f"- command: `{command}` ({'debug' if mode == 'quick' else 'release'} build)",
       f"- pinning: load generator and test server on core(s) {load_cpus}; proxies, gateways and the fan-out control plane on core(s) {sut_cpus} (`taskset`)"]
if note:
    out.append(f"- note: {note}")
if mode == "quick":
    out.append("- quick mode: debug build, low rates, seconds per run; the goal checks below say nothing about Ward's real cost")
out.append("")

# ---------------------------------------------------------------- data plane
lat = of("dataplane", kind="latency")
if lat:
    out += ["## Data plane: client → outbound → mTLS → inbound → server", "",
            "A client calls a server (1 KiB answers) through two proxies on loopback: two `ward dp run` with SVIDs",
            "from a real control plane (builtin mTLS, STRICT, one MeshTrafficPermission allowing client → server),",
            "or two HAProxy 2.6 processes as the same hop with SVIDs of the same mesh CA (TLS 1.3,",
            "TLS_AES_256_GCM_SHA384, HTTP/2 between the proxies as Ward does; HAProxy authenticates but does not",
            "authorize), or directly. Load is open loop at a fixed rate, latency counted from each request's",
            "intended send time (no coordinated omission); the client speaks HTTP/1.1 keep-alive or h2c (prior",
            "knowledge; Ward's outbound accepts both on one port). Added latency = peer − direct at the same",
            "percentile, rate and protocol. CPU is each proxy's user+system seconds per 1,000 requests (equal to",
            "cores used per 1,000 req/s); RSS is the highest sampled under load.", "",
            "| protocol | req/s | peer | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | errors | CPU s / 1k req (out / in) | RSS MiB under load (out / in) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    added = {}
    for r in lat:
        base = next((d for d in lat if d["peer"] == "direct" and d["protocol"] == r["protocol"] and d["rate"] == r["rate"]), r)
        add = [r[k] - base[k] for k in ("p50_ms", "p99_ms", "p999_ms")]
        added[(r["peer"], r["protocol"], r["rate"])] = add
        show = ["–"] * 3 if r["peer"] == "direct" else [f(a) for a in add]
        out.append(f"| {r['protocol']} | {f(r['rate'], 0)} | {r['peer']} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | {f(r['p999_ms'])} | "
                   f"{' | '.join(show)} | {r['errors']} | {pair(r['cpu_s_per_1000'], 3)} | {pair(r['rss_load_mib'])} |")
    out.append("")
    idle = {r["peer"]: r["rss_idle_mib"] for r in of("dataplane", kind="idle")}
    hs = of("dataplane", kind="handshakes")
    mx = of("dataplane", kind="max_rate")
    out += ["| peer | RSS idle MiB (out / in) | max req/s with p99 < 10 ms, HTTP/1.1 | same, h2c | new mTLS connections/s against the inbound | per CPU-second of the inbound |",
            "|---|---:|---:|---:|---:|---:|"]
    for peer in [p for p in ("direct", "ward", "ward-baseline", "haproxy") if p in {r["peer"] for r in lat}]:
        m = {r["protocol"]: r for r in mx if r["peer"] == peer}
        show_max = lambda p: (f(m[p]["max_rps"], 0) + ("+" if m[p]["ceiling"] else "")) if p in m else "–"
        h = next((r for r in hs if r["peer"] == peer), None)
        out.append(f"| {peer} | {pair(idle.get(peer, []))} | {show_max('http1')} | {show_max('h2c')} | "
                   f"{f(h['per_second'], 0) if h else '–'} | {f(h['per_inbound_cpu_second'], 0) if h else '–'} |")
    out += ["", "`+`: the highest rate tried still passed (the generator's step list ended). Connections: full TLS 1.3",
            "handshakes with a client SVID, no resumption, one `Connection: close` request each, 8 at a time.", ""]
    # Goals, at 1,000 req/s (quick mode: the lowest rate it runs).
    rate = 1000.0 if any(r["rate"] == 1000.0 for r in lat) else min(r["rate"] for r in lat)
    ward = [r for r in lat if r["peer"] == "ward"]
    at_rate = [r for r in ward if r["rate"] == rate]
    worse = [(p, rt) for (peer, p, rt), a in added.items() if peer == "ward" and a[1] >= added.get(("haproxy", p, rt), [0, float("inf")])[1]]
    rss = max((v for r in at_rate for v in r["rss_load_mib"]), default=0)
    cores = max((v for r in at_rate for v in r["cpu_s_per_1000"]), default=0)
    cpu_ratios = [wr["cpu_s_per_1000"][i] / hr["cpu_s_per_1000"][i] for wr in ward for hr in lat
                  if hr["peer"] == "haproxy" and hr["protocol"] == wr["protocol"] and hr["rate"] == wr["rate"] for i in range(2) if hr["cpu_s_per_1000"][i] > 0]
    p99_ratios = [added[("ward", w["protocol"], w["rate"])][1] / added[("haproxy", w["protocol"], w["rate"])][1] for w in ward
                  if added.get(("haproxy", w["protocol"], w["rate"]), [0, 0])[1] > 0]
    out += ["Goals:", "",
            f"- added p99 below HAProxy's: {met(not worse)}" + (f" (not below at {', '.join(f'{p} {f(r, 0)} req/s' for p, r in worse)})" if worse else "") +
            (f"; Ward's added p99 is {f(min(p99_ratios))}–{f(max(p99_ratios))}× HAProxy's" if p99_ratios else ""),
            f"- under 20 MiB RSS per proxy at {f(rate, 0)} req/s: {met(rss < 20)} (highest: {f(rss, 1)} MiB)",
            f"- under 0.06 cores per 1,000 req/s per proxy (at {f(rate, 0)} req/s): {met(cores < 0.06)} (highest: {f(cores, 3)})" +
            (f"; Ward uses {f(min(cpu_ratios))}–{f(max(cpu_ratios))}× HAProxy's CPU per request" if cpu_ratios else ""), ""]
    # Against an earlier Ward measured in the same run (BENCH_WARD_BASELINE): the medians of the
    # rounds in which the two took turns, each proxy at each rate and protocol.
    vs = of("dataplane", kind="versus_baseline")
    base = {(r["protocol"], r["rate"]): r for r in lat if r["peer"] == "ward-baseline"}
    if vs:
        name = os.environ.get("BENCH_WARD_BASELINE_NAME", "an earlier build")
        cells = sorted({(r["protocol"], r["rate"]) for r in vs}, key=lambda c: (c[1], c[0]))
        rounds = max(r["round"] for r in vs) + 1

        def med(peer, cell, key):
            samples = [r[key] for r in vs if r["peer"] == peer and (r["protocol"], r["rate"]) == cell]
            return [statistics.median(s[i] for s in samples) for i in range(2)]
        out += [f"Against `ward-baseline` ({name}): after the rows above and before the step searches, {rounds} more "
                "rounds of the fixed rates through both pairs, taking turns to go first; medians of the rounds, "
                "per proxy (out / in):", "",
                "| protocol | req/s | CPU s / 1k req, ward | baseline | RSS MiB under load, ward | baseline |",
                "|---|---:|---:|---:|---:|---:|"]
        cpu_b, rss_b = [], []
        for cell in cells:
            wc, bc = med("ward", cell, "cpu_s_per_1000"), med("ward-baseline", cell, "cpu_s_per_1000")
            wr, br = med("ward", cell, "rss_load_mib"), med("ward-baseline", cell, "rss_load_mib")
            cpu_b += [a / b for a, b in zip(wc, bc) if b > 0]
            rss_b += [a / b for a, b in zip(wr, br) if b > 0]
            out.append(f"| {cell[0]} | {f(cell[1], 0)} | {pair(wc, 3)} | {pair(bc, 3)} | {pair(wr)} | {pair(br)} |")
        out += ["", f"Medians: Ward's CPU per request is {f(min(cpu_b))}–{f(max(cpu_b))}× the baseline's, "
                f"its RSS under load {f(min(rss_b))}–{f(max(rss_b))}×.", ""]
    elif base:
        name = os.environ.get("BENCH_WARD_BASELINE_NAME", "an earlier build")
        def ratios(key):
            return [a / b for w in ward if (w["protocol"], w["rate"]) in base
                    for a, b in zip(w[key], base[(w["protocol"], w["rate"])][key]) if b > 0]
        cpu_b, rss_b = ratios("cpu_s_per_1000"), ratios("rss_load_mib")
        hp = [hr["cpu_s_per_1000"][i] / br["cpu_s_per_1000"][i] for br in base.values() for hr in lat
              if hr["peer"] == "haproxy" and (hr["protocol"], hr["rate"]) == (br["protocol"], br["rate"]) for i in range(2)
              if br["cpu_s_per_1000"][i] > 0]
        out += [f"Against `ward-baseline` ({name}), the same scenarios in this run: Ward's CPU per request is "
                f"{f(min(cpu_b))}–{f(max(cpu_b))}× the baseline's, its RSS under load {f(min(rss_b))}–{f(max(rss_b))}×"
                + (f"; the baseline uses {f(min(1 / x for x in hp))}–{f(max(1 / x for x in hp))}× HAProxy's CPU per request." if hp else "."), ""]

# ---------------------------------------------------------------- transparent proxying
tp = of("transparent")
if tp:
    out += ["## Transparent proxying: the iptables redirect against the explicit outbound", "",
            "Two hosts (network namespaces joined by a veth bridge): `server` runs the control plane, the server and",
            "its proxy; `client` has `ward install transparent-proxy` and a proxy as the proxy user whose Dataplane",
            "has `transparentProxying` and an explicit outbound. The generator, in `client`, calls the same server",
            "through the explicit outbound (`127.0.0.1:PORT`, left alone by the rules) and by the server's own",
            "address (captured by the nat rules into the transparent outbound listener, which maps the original",
            "destination to the service); both then cross the same mTLS hop. HTTP/1.1 keep-alive, open loop;",
            "both paths are measured back to back at each rate. Added = transparent − explicit; a negative figure",
            "means the difference is smaller than the spread between two runs.", "",
            "| req/s | path | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | errors | CPU s / 1k req (client proxy / server proxy) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in tp:
        base = next((e for e in tp if e["path"] == "explicit" and e["rate"] == r["rate"]), r)
        show = ["–"] * 3 if r["path"] == "explicit" else [f(r[k] - base[k]) for k in ("p50_ms", "p99_ms", "p999_ms")]
        out.append(f"| {f(r['rate'], 0)} | {r['path']} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | {f(r['p999_ms'])} | "
                   f"{' | '.join(show)} | {r['errors']} | {pair(r['cpu_s_per_1000'], 3)} |")
    out.append("")

# ---------------------------------------------------------------- gateway
gw = of("gateway")
if gw:
    out += ["## Edge gateway: HTTPS client → gateway → server", "",
            "`ward gateway run` with one service and route, without plugins and with key-auth + rate-limiting",
            "(local policy, a limit of a million per second, never reached), against nginx 1.22 (one worker,",
            "keep-alive to the server) as a plain TLS reverse proxy; same certificate, TLS 1.3, HTTP/1.1 keep-alive",
            "client. Each gateway runs alone on one core. Saturation: closed loop; req/s per core = requests",
            "answered / CPU-seconds the gateway used (the client shares its core with the server and may be the",
            "limit of the absolute rate). Latency: open loop at the fixed rate shown.", "",
            "| gateway | closed-loop req/s | gateway CPU s | req/s per core | fixed req/s | p50 ms | p99 ms | p99.9 ms | errors | RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in gw:
        x = r["fixed"]
        out.append(f"| {r['peer']} | {f(r['saturated_rps'], 0)} | {f(r['gateway_cpu_s'], 1)} | {f(r['rps_per_core'], 0)} | {f(r['rate'], 0)} | "
                   f"{f(x['p50_ms'])} | {f(x['p99_ms'])} | {f(x['p999_ms'])} | {x['errors'] + r['saturated_errors']} | {f(r['rss_mib'], 1)} |")
    by = {r["peer"]: r for r in gw}
    plug, plain, nginx = by.get("ward+key-auth+rate-limiting"), by.get("ward"), by.get("nginx")
    out += ["", "Goals:", ""]
    if plug:
        out.append(f"- at least 10,000 req/s per core with key-auth + rate-limiting: {met(plug['rps_per_core'] >= 10000)} ({f(plug['rps_per_core'], 0)})")
    if plain and nginx:
        out.append(f"- p99 no worse than nginx without plugins: {met(plain['fixed']['p99_ms'] <= nginx['fixed']['p99_ms'])} "
                   f"({f(plain['fixed']['p99_ms'])} vs {f(nginx['fixed']['p99_ms'])} ms)")
        out.append(f"- against nginx: {f(plain['rps_per_core'] / nginx['rps_per_core'])}× its req/s per core without plugins"
                   + (f", {f(plug['rps_per_core'] / nginx['rps_per_core'])}× with key-auth + rate-limiting" if plug else ""))
    out.append("")

# ---------------------------------------------------------------- control plane fan-out
fan = of("cp-fanout")
if fan:
    out += ["## Control plane: configuration fan-out to many proxies", "",
            "One process simulates the proxies: each opens a discovery stream (100 per HTTP/2 connection), registers",
            "its own Dataplane with its own dataplane token as `ward dp run` does (10 instances per service, one",
            "outbound each), and reads every configuration pushed. Once all are connected and quiet, a",
            "MeshTrafficPermission targeting the whole mesh is PUT; the time is from the PUT to each proxy receiving",
            "a configuration that holds it. RSS per proxy = (RSS connected − RSS before any stream) / proxies.", "",
            "| proxies | register s | configs pushed while joining | CP RSS before / connected MiB | KiB per proxy | updated | p50 ms | p99 ms | max ms | CP CPU s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in fan:
        out.append(f"| {r['proxies']:,} | {f(r['all_configured_seconds'], 1)} | {r['configs_while_joining']:,} | {f(r['rss_baseline_mib'], 1)} / {f(r['rss_connected_mib'], 1)} | "
                   f"{f(r['kib_per_proxy'], 1)} | {r['updated']:,} / {r['proxies']:,} | {f(r['update_p50_ms'], 1)} | {f(r['update_p99_ms'], 1)} | {f(r['update_max_ms'], 1)} | {f(r['cp_cpu_seconds'], 1)} |")
    big = max(fan, key=lambda r: r["proxies"])
    all_in = big["updated"] == big["proxies"]
    out += ["", "Goals:", "",
            f"- 10,000 proxies: {met(big['proxies'] >= 10000 and all_in)} (largest run: {big['proxies']:,})",
            f"- under 100 KiB per proxy: {met(all(r['kib_per_proxy'] < 100 for r in fan))} ({', '.join(f(r['kib_per_proxy'], 1) for r in fan)})",
            f"- every proxy updated within 1 s: {met(all(r['updated'] == r['proxies'] and r['update_max_ms'] < 1000 for r in fan))} "
            f"(slowest: {', '.join(f(r['update_max_ms'], 0) + ' ms' for r in fan)})", ""]

# ---------------------------------------------------------------- SVID issuance
svids = of("cp-svids")
if svids:
    out += ["## Control plane: SVID issuance", "",
            "One process simulates the proxies of a mesh with builtin mTLS (ECDSA P-256 CA): all are connected, then",
            "all send a CSR (made beforehand, as each proxy makes its own key) at the same moment, as after a mass",
            "renewal. Latency is from a CSR sent to its certificate received; SVIDs per core is SVIDs per CPU-second",
            "the control plane used meanwhile (it is pinned to one core). Goal: at least 5,000 SVIDs/s per core.", "",
            "| proxies | seconds | SVIDs/s | CP CPU s | SVIDs per CPU-second | p50 ms | p99 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in svids:
        out.append(f"| {r['proxies']:,} | {f(r['seconds'], 2)} | {r['svids_per_second']:,.0f} | {f(r['cp_cpu_seconds'], 2)} | "
                   f"{r['svids_per_cpu_second']:,.0f} | {f(r['p50_ms'], 1)} | {f(r['p99_ms'], 1)} | {f(r['max_ms'], 1)} |")
    s = svids[-1]
    out += ["", f"Goal: {met(s['svids_per_cpu_second'] >= 5000)} ({s['svids_per_cpu_second']:,.0f} SVIDs per CPU-second)", ""]

# ---------------------------------------------------------------- control plane writes
writes = of("cp-writes")
if writes:
    out += ["## Control plane: resource writes through the REST API", "",
            "Dataplanes and MeshTrafficPermissions PUT by 32 concurrent clients over HTTP/1.1 keep-alive,",
            "into the SQLite store (WAL); not pinned. Goal: at least 2,000 writes/s and under 200 MiB RSS.", "",
            "| writes | writes/s | p50 ms | p99 ms | p99.9 ms | CP CPU s | CP RSS after MiB | CP peak RSS MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in writes:
        out.append(f"| {r['writes']:,} | {r['writes_per_second']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['cpu_seconds']:.1f} | {r['rss_mib']:.1f} | {r['peak_rss_mib']:.1f} |")
    w = writes[-1]
    out += ["", f"Goal: {met(w['writes_per_second'] >= 2000 and w['peak_rss_mib'] < 200)} ({w['writes_per_second']:,.0f} writes/s, {w['peak_rss_mib']:.1f} MiB peak)", ""]

print("\n".join(out))
