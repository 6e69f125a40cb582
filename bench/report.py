"""The harness's results as markdown: the side-by-side table and the targets of issue #3."""

from __future__ import annotations

from typing import Any


def _level(server: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in server.get("levels", []) if lv["concurrency"] == concurrency), None)


def _metric(level: dict[str, Any], name: str, stat: str) -> float | None:
    value = level.get(name)
    return None if value is None else float(value[stat])


def _fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def side_by_side(results: dict[str, Any]) -> list[str]:
    """One row per server and concurrency level."""
    lines = [
        "| server | conc | out tok/s | req/s | tok/req | TTFT p50 / p95 ms | TPOT p50 ms "
        "| ITL p95 ms | latency p50 s | errors | client CPU % | load avg before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, server in results["servers"].items():
        if "error" in server:
            lines.append(f"| {name} | failed: {server['error'].splitlines()[0][:80]} |")
            continue
        load = server.get("load_average_before", ["-"])[0]
        for lv in server["levels"]:
            ttft = f"{_fmt(_metric(lv, 'ttft', 'p50'), 1000)} / "
            ttft += _fmt(_metric(lv, "ttft", "p95"), 1000)
            lines.append(
                f"| {name} | {lv['concurrency']} | {lv['output_tokens_per_s']:.1f} "
                f"| {lv['requests_per_s']:.2f} | {lv['mean_output_tokens']:.0f} | {ttft} "
                f"| {_fmt(_metric(lv, 'tpot', 'p50'), 1000)} "
                f"| {_fmt(_metric(lv, 'itl', 'p95'), 1000)} "
                f"| {_fmt(_metric(lv, 'latency', 'p50'), 1, 2)} | {lv['errors']} "
                f"| {lv['client_cpu_percent']:.1f} | {load} |"
            )
    return lines


def _ratio_row(what: str, value: float | None, target: str, met: bool | None) -> str:
    shown = "-" if value is None else f"{value:.2f}"
    verdict = "n/a" if met is None else ("met" if met else "**not met**")
    return f"| {what} | {shown} | {target} | {verdict} |"


def _tok_s(results: dict[str, Any], name: str, concurrency: int) -> float | None:
    server = results["servers"].get(name, {})
    level = _level(server, concurrency) if "levels" in server else None
    return None if level is None or not level["completed"] else level["output_tokens_per_s"]


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue #3 as a ratio that must be >= or <= its bound."""
    top = max(results["settings"]["concurrency"])
    r1 = "r1serve-transformers" if "r1serve-transformers" in results["servers"] else "r1serve"
    ours = results["servers"].get(r1, {})
    loop = results.get("engine_loop", {}).get("output_tokens_per_s")
    one = _tok_s(results, r1, 1)
    out: dict[str, Any] = {
        "http_vs_engine_loop": _div(one, loop),
        f"vs_reference_at_{top}": _div(_tok_s(results, r1, top), _tok_s(results, "reference", top)),
        f"vs_transformers_cb_at_{top}": _div(
            _tok_s(results, r1, top), _tok_s(results, "transformers-cb", top)
        ),
    }
    out |= llamacpp_targets(results, top)
    single, loaded = _level(ours, 1), _level(ours, top)
    prefill = results.get("engine_loop", {}).get("prefill_s_median")
    if single and loaded and single.get("ttft") and loaded.get("ttft") and prefill is not None:
        bound = 3 * single["ttft"]["p50"] + prefill
        out["ttft_p95_bound_s"] = bound
        out[f"ttft_p95_at_{top}_over_bound"] = loaded["ttft"]["p95"] / bound
    soak = results.get("soak") or {}
    if "rss_growth_ratio" in soak:
        out["rss_after_all_over_checkpoint"] = soak["rss_growth_ratio"]
        out["cancels_back_to_idle"] = soak["cancel"]["idle_after"]
        out["health_p99_s"] = (soak["health"]["health_latency_s"] or {}).get("p99")
    return out


def llamacpp_targets(results: dict[str, Any], top: int) -> dict[str, Any]:
    """Issue #9's ratios for r1serve's llama.cpp engine (None where a server did not run)."""
    ours = "r1serve-llamacpp"
    servers = results["servers"]
    rss = servers.get(ours, {}).get("rss_after_bytes")
    defaults = servers.get("r1serve-llamacpp-defaults", {}).get("rss_after_bytes")
    transformers = servers.get("r1serve-transformers-defaults", {}).get("rss_after_bytes")
    return {
        # llama.cpp's own server at one stream stands for the binding's single-sequence rate.
        "llamacpp_1_vs_binding_1": _div(
            _tok_s(results, ours, 1), _tok_s(results, "llamacpp-server", 1)
        ),
        f"llamacpp_vs_llamacpp_server_at_{top}": _div(
            _tok_s(results, ours, top), _tok_s(results, "llamacpp-server", top)
        ),
        f"llamacpp_vs_llama_cpp_python_at_{top}": _div(
            _tok_s(results, ours, top), _tok_s(results, "llama-cpp-python", top)
        ),
        "llamacpp_vs_transformers_at_1": _div(
            _tok_s(results, ours, 1), _tok_s(results, "r1serve-transformers", 1)
        ),
        "llamacpp_rss_bytes": rss,
        # make run's plans, as a user gets them: the memory target is about these.
        "llamacpp_defaults_rss_bytes": defaults,
        "transformers_defaults_rss_bytes": transformers,
        "llamacpp_vs_transformers_defaults_rss": _div(defaults, transformers),
    }


def llamacpp_targets_table(results: dict[str, Any]) -> list[str]:
    """Issue #9's targets with this run's ratios."""
    t = results["targets"]
    top = max(results["settings"]["concurrency"])

    def at_least(key: str, bound: float) -> bool | None:
        return None if t.get(key) is None else t[key] >= bound

    rss = t.get("llamacpp_defaults_rss_bytes")
    same_slots = t.get("llamacpp_rss_bytes")
    return [
        "| target (issue #9) | measured | bound | |",
        "|---|---|---|---|",
        _ratio_row("1 stream: r1serve llama.cpp / llama.cpp's own server (tok/s)",
                   t.get("llamacpp_1_vs_binding_1"), ">= 0.95",
                   at_least("llamacpp_1_vs_binding_1", 0.95)),
        _ratio_row(f"{top} streams: r1serve llama.cpp / llama.cpp's server, same slots",
                   t.get(f"llamacpp_vs_llamacpp_server_at_{top}"), ">= 0.9",
                   at_least(f"llamacpp_vs_llamacpp_server_at_{top}", 0.9)),
        _ratio_row(f"{top} streams: r1serve llama.cpp / llama-cpp-python's server",
                   t.get(f"llamacpp_vs_llama_cpp_python_at_{top}"), ">= 2",
                   at_least(f"llamacpp_vs_llama_cpp_python_at_{top}", 2)),
        _ratio_row("1 stream: r1serve llama.cpp / r1serve transformers",
                   t.get("llamacpp_vs_transformers_at_1"), ">= 4 (SmolLM2)",
                   at_least("llamacpp_vs_transformers_at_1", 4)),
        _ratio_row("r1serve llama.cpp RSS after the sweep, make run's plan (GB)",
                   None if rss is None else rss / 1e9, "<= 0.6 (SmolLM2)",
                   None if rss is None else rss <= 0.6e9),
        _ratio_row("RSS, make run's plans: r1serve llama.cpp / r1serve transformers",
                   t.get("llamacpp_vs_transformers_defaults_rss"), "<= 0.5 (SmolLM2)",
                   None if t.get("llamacpp_vs_transformers_defaults_rss") is None
                   else t["llamacpp_vs_transformers_defaults_rss"] <= 0.5),
        _ratio_row("r1serve llama.cpp RSS after the sweep, the run's slots (GB)",
                   None if same_slots is None else same_slots / 1e9, "(compare llama.cpp's server)",
                   None),
    ]  # fmt: skip


def targets_table(results: dict[str, Any]) -> list[str]:
    """The targets with the ratios measured in this run."""
    t = results["targets"]
    top = max(results["settings"]["concurrency"])
    soak = results.get("soak") or {}
    checkpoint, total = soak.get("checkpoint", 100), soak.get("requests", 1000)

    def at_least(key: str, bound: float) -> bool | None:
        return None if t.get(key) is None else t[key] >= bound

    def at_most(key: str, bound: float) -> bool | None:
        return None if t.get(key) is None else t[key] <= bound

    health = t.get("health_p99_s")
    idle = t.get("cancels_back_to_idle")
    return [
        "| target | measured | bound | |",
        "|---|---|---|---|",
        _ratio_row("1 stream over HTTP / raw engine loop (tok/s)", t.get("http_vs_engine_loop"),
                   ">= 0.95", at_least("http_vs_engine_loop", 0.95)),
        _ratio_row(f"{top} streams: r1serve / reference (tok/s)", t.get(f"vs_reference_at_{top}"),
                   ">= 6", at_least(f"vs_reference_at_{top}", 6)),
        _ratio_row(f"{top} streams: r1serve / transformers serve --continuous-batching",
                   t.get(f"vs_transformers_cb_at_{top}"), ">= 1.5",
                   at_least(f"vs_transformers_cb_at_{top}", 1.5)),
        _ratio_row(f"p95 TTFT at {top} streams / (3 x TTFT at 1 + one prefill)",
                   t.get(f"ttft_p95_at_{top}_over_bound"), "<= 1",
                   at_most(f"ttft_p95_at_{top}_over_bound", 1)),
        _ratio_row(f"RSS after {total} requests / after {checkpoint}",
                   t.get("rss_after_all_over_checkpoint"), "<= 1.05",
                   at_most("rss_after_all_over_checkpoint", 1.05)),
        _ratio_row("/health p99 while 32 streams run (ms)",
                   None if health is None else health * 1000, "< 100",
                   None if health is None else health < 0.1),
        _ratio_row("cancel cycles leave nothing running, waiting or in KV (1 = yes)",
                   None if idle is None else float(idle), "= 1", idle),
    ]  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    """The whole report: setup, side-by-side table, targets, greedy check."""
    s = results["settings"]
    m = results["machine"]
    loop = results.get("engine_loop")
    loop_line = (
        f"Raw engine loop (no HTTP, 1 stream): {loop['output_tokens_per_s']:.1f} tok/s, "
        f"median prefill {loop['prefill_s_median'] * 1000:.0f} ms."
        if loop
        else "Raw engine loop: not run (--no-engine-loop)."
    )
    lines = [
        f"# r1serve side-by-side benchmark, {results['date']}"
        + (" (QUICK: smoke run, not a result)" if s["quick"] else ""),
        "",
        f"- machine: {m['cpu_model']}, {m['usable_cores']} usable cores, "
        f"{m['ram_total_bytes'] / 2**30:.1f} GiB RAM; load average at start "
        f"{results['load_average_start']}",
        f"- model: {results['model']['name']} ({results['model']['dir']}), float32, "
        f"{s['threads']} threads",
        f"- workload: prompts `{s['prompts']}`, {s['max_tokens']} output tokens (EOS ignored), "
        f"greedy, concurrency {', '.join(map(str, s['concurrency']))}",
        f"- commit {results['git_commit']}; command `{results['command']}`",
        "",
        "## Side by side",
        "",
        *side_by_side(results),
        "",
        loop_line,
        "",
        "## Targets",
        "",
        *targets_table(results),
        "",
        *llamacpp_targets_table(results),
        "",
        "## Greedy check",
        "",
        f"Same greedy text from every server: {results['greedy_check']['all_equal']}.",
        "",
    ]  # fmt: skip
    for name, text in results["greedy_check"]["texts"].items():
        lines.append(f"- {name}: {text!r}")
    notes = [(n, note) for n, s in results["servers"].items() for note in s.get("notes", [])]
    if notes:
        lines += ["", "## Notes from the benchmark client", ""]
        lines += [f"- {name}, {note}" for name, note in notes]
    return "\n".join(lines) + "\n"
