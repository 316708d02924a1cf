"""Evaluate: score the run's checkpoints and relex's exports with a benchmark, in the background, and compare."""

import time

import streamlit as st

from relex_core.evaluate import CommandScorer, LmEvalScorer, SampleScorer
from relex_core.options import parse_target_steps
from relex_dashboard import charts, evaluate, files, frames, scoring, state, teaching
from relex_dashboard.report import PageFigures

SAMPLE, LM_EVAL, COMMAND = "Sample verifier", "lm-eval task", "Command"
EVERY, PICKED = "every k-th", "picked"
QUEUED = "evaluate.queued"  # folders the Export page asked to score ("score this export")
SEEN = "evaluate.seen"      # folders the job had finished when the page was last drawn


def kept(widget, label: str, key: str, default, where=st, **options):
    """A widget whose value outlives a visit to another page (state.bind), as the sidebar's do."""
    on_change = state.bind(key, f"{key}.kept", default)
    return getattr(where, widget)(label, key=key, on_change=on_change, **options)


def choose_scorer(analysis):
    """The scorer the user set up, or None (with the reason on the page)."""
    choices = [SAMPLE, LM_EVAL, COMMAND] if analysis.is_sample else [LM_EVAL, COMMAND]
    if st.session_state.get("evaluate.scorer.kept") not in choices:
        st.session_state["evaluate.scorer.kept"] = choices[0]
    choice = kept("radio", "Scorer", "evaluate.scorer", choices[0], options=choices, horizontal=True)
    if choice == SAMPLE:
        problems = kept("number_input", "Problems", "evaluate.problems", 1000, min_value=10, max_value=1000,
                        step=10, help="How many of the sample task's 1000 held-out problems each folder is scored "
                                      "on (greedy decoding, exact match); fewer is faster, with a larger stderr.")
        return SampleScorer(limit=None if problems >= 1000 else int(problems))
    if choice == COMMAND:
        if files.run_roots() is not None:
            st.info("This server restricts the folders it opens (RELEX_RUN_ROOTS), so it runs no typed commands. "
                    "Use an lm-eval task, or `relex evaluate --command` on the server.")
            return None
        columns = st.columns([5, 1])
        command = kept("text_input", "Command ({path} becomes the folder)", "evaluate.command", "",
                       where=columns[0], placeholder="python my_eval.py --model {path}",
                       help="Run on this server once per folder. Its last line on stdout is the score: a JSON "
                            "object of metric → number, or a bare number.")
        minutes = kept("number_input", "Timeout (min)", "evaluate.timeout", 60, where=columns[1], min_value=1,
                       help="Per folder.")
        return CommandScorer(command, timeout=60.0 * minutes) if command.strip() else None
    sample_tasks = files.sample_run().parent / "lm_eval_tasks" if analysis.is_sample else None
    columns = st.columns([3, 3, 3, 1])
    tasks = kept("text_input", "lm-eval tasks", "evaluate.tasks", "relex_sample_addition" if sample_tasks else "",
                 where=columns[0], placeholder="gsm8k", help="Task or group names, separated by commas.")
    model_args = kept("text_input", "Model arguments", "evaluate.model_args",
                      "dtype=float32,batch_size=64" if sample_tasks else "", where=columns[1],
                      placeholder="dtype=bfloat16,batch_size=16",
                      help="lm-eval's --model_args besides pretrained= (relex passes each folder).")
    include = kept("text_input", "Task folder (optional)", "evaluate.include", str(sample_tasks or ""),
                   where=columns[2], help="A folder of task YAMLs, lm-eval's include path, for local tasks.")
    limit = kept("number_input", "Limit", "evaluate.limit", 100, where=columns[3], min_value=0, step=10,
                 help="Examples per task (0: all of them).")
    if not tasks.strip():
        st.caption("Name an lm-eval task to score with.")
        return None
    return LmEvalScorer(tasks=tuple(task.strip() for task in tasks.split(",") if task.strip()), model_args=model_args,
                        include=evaluate.include_folder(include, files.run_roots()), limit=int(limit) or None)


def choose_items(analysis, folder) -> list:
    """The folders to score: the run's checkpoints, relex exports of the window, the baselines, queued exports."""
    columns = st.columns([2, 3, 4])
    mode = kept("radio", "Run checkpoints", "evaluate.checkpoints", EVERY, where=columns[0], options=[EVERY, PICKED],
                horizontal=True)
    if mode == EVERY:
        k = kept("number_input", "k", "evaluate.k", evaluate.default_k(analysis.steps), where=columns[1],
                 min_value=1, max_value=len(analysis.steps), help="Every k-th checkpoint, from the k-th on.")
        picked = evaluate.every_kth(analysis.steps, k)
    else:
        options = [int(analysis.run_gram.run.base.step), *analysis.steps]
        picked = kept("multiselect", "Checkpoints", "evaluate.picked", [], where=columns[1], options=options)
    default_targets = evaluate.default_evaluation_steps(analysis.steps, analysis.window)
    default_text = ", ".join(map(str, default_targets))
    targets_key = state.follow_default("evaluate.targets", default_text)
    targets_text = kept("text_input", f"relex exports from window {analysis.window_label} at target steps",
                        targets_key, default_text, where=columns[2],
                        help="Written under the export root, beside scores.csv, and kept; empty: no export.")
    options = st.columns(3)
    last = kept("checkbox", "the window's last checkpoint (`last`)", "evaluate.last", True, where=options[0])
    real = kept("checkbox", "the run's checkpoints at the target steps", "evaluate.real", True, where=options[1])
    linear = kept("checkbox", "the line through base and last (`linear`)", "evaluate.linear", False,
                  where=options[2])
    targets = parse_target_steps(targets_text) if targets_text.strip() else []
    if targets and not state.confirm_targets(targets, analysis.window, "evaluate.far"):
        targets = []
    items = evaluate.plan(analysis.fit, folder, picked, targets, last=last, linear=linear, real_at_targets=real)
    queued = st.session_state.get(QUEUED, [])
    if queued and st.checkbox(f"and the export written on the Export page: {state.code(queued[-1])}", value=True,
                              key="evaluate.use_queued"):
        items += evaluate.given_folders(queued[-1:])
    return items


def describe(items) -> str:
    checkpoints = [str(item.step) for item in items if item.kind == "checkpoint"]
    parts = [f"{len(checkpoints)} checkpoint(s) (steps {', '.join(checkpoints)})" if checkpoints else ""]
    for kind in evaluate.EXPORT_KINDS:
        steps = [str(item.step) for item in items if item.kind == kind]
        parts.append(f"{len(steps)} {kind} export(s) (target steps {', '.join(steps)})" if steps else "")
    parts.append("1 folder from the Export page" if any(item.kind == "folder" for item in items) else "")
    return "; ".join(part for part in parts if part) or "nothing"


@st.fragment(run_every=1.0)
def job_progress(job: scoring.ScoringJob) -> None:
    """The job's progress and cancel button, redrawn every second; the page reruns when a folder is done."""
    if not job.running or job.finished != st.session_state.get(SEEN):
        st.rerun()
    fraction, message = job.progress
    text = "Cancelling: the folder being scored finishes first" if job.cancel.is_set() else message
    st.progress(fraction, text=f"{text} · {time.monotonic() - job.started:.0f} s")
    st.button("Cancel scoring", key="evaluate.cancel", on_click=job.cancel.set, disabled=job.cancel.is_set())


def show_outcome(job: scoring.ScoringJob) -> None:
    """What the last job on this run did: counts, and each folder that failed."""
    error = job.future.exception()
    if error is not None:
        st.error(f"Scoring stopped: {error}")
        return
    outcomes = job.future.result()
    counts = {status: sum(outcome.status == status for outcome in outcomes) for status in ("scored", "skipped",
                                                                                             "failed")}
    cancelled = " (cancelled)" if job.cancel.is_set() else ""
    st.caption(f"Last scoring{cancelled} with {state.code(job.scorer.name)}: {counts['scored']} scored, "
               f"{counts['skipped']} already scored and unchanged, {counts['failed']} failed.")
    for outcome in outcomes:
        if outcome.status == "failed":
            st.warning(outcome.error)


analysis = state.page_setup()
figures = PageFigures("Evaluate", analysis.context)
folder = evaluate.scores_folder(analysis.run_gram.run)
out = folder / evaluate.SCORES_FILE
st.title("Evaluate")
teaching.how_to_read("Evaluate")
st.caption(f"Score the run's own checkpoints and relex's exports from window {state.code(analysis.window_label)} "
           f"(rank {analysis.rank}, {analysis.fit_name}) with a benchmark. Scoring runs in the background: other "
           f"pages can be visited meanwhile. Scores are kept in {state.code(out)} and shown on every visit.")

st.subheader("Scorer")
scorer, items = None, []
with state.errors_shown():
    scorer = choose_scorer(analysis)
st.subheader("What to score")
with state.errors_shown():
    items = choose_items(analysis, folder)
job = scoring.registry().get(out)
running = job is not None and job.running
force = st.checkbox("Score again folders already scored by this scorer", key="evaluate.force",
                    help="A folder scored before with the same scorer and unchanged weights is skipped otherwise.")
st.caption(f"To score: {describe(items)}.")
if st.button("Score", type="primary", key="evaluate.run", disabled=running or scorer is None or not items):
    with state.errors_shown():
        job = scoring.registry().start(analysis.fit, out, scorer, items, force=force)
        running = True
        if any(item.kind == "folder" for item in items):
            st.session_state.pop(QUEUED, None)
if job is not None:
    st.session_state[SEEN] = job.finished
    if running:
        job_progress(job)
    else:
        show_outcome(job)

st.subheader("Scores")
scores = None
with state.errors_shown():
    scores, changed = evaluate.stored_scores(out)
    if changed:
        st.caption(f"{changed} stored score(s) are of folders changed or removed since they were scored: not shown.")
if scores is not None and scores.empty:
    st.caption("No scores for this run yet.")
elif scores is not None:
    measures = evaluate.measures(scores)
    scorer_name, metric = (measures[0] if len(measures) == 1 else st.selectbox(
        "Scorer and metric", measures, format_func=lambda pair: f"{pair[1]} · {pair[0]}", key="evaluate.measure"))
    rows = evaluate.of_measure(scores, scorer_name, metric)
    figures.chart(charts.scores_chart(rows, analysis.window, f"{metric} (±1 standard error)"), rows, "scores")
    st.markdown("**Each export against the run's checkpoint at the same step, and against its window's last**")
    st.dataframe(evaluate.comparison_frame(rows), hide_index=True, column_config={
        "setting": st.column_config.TextColumn("rank, fit", help="Empty: rank 1, linear."),
        "step": st.column_config.NumberColumn("target step", format="%d"),
        "value": st.column_config.NumberColumn(metric, format="%.3f"),
        "stderr": st.column_config.NumberColumn("± stderr", format="%.3f"),
        "vs_checkpoint": st.column_config.NumberColumn("Δ vs RL checkpoint", format="%+.3f",
                                                       help="Minus the run's checkpoint's score at the same step."),
        "vs_checkpoint_stderr": st.column_config.NumberColumn("± (vs RL)", format="%.3f"),
        "vs_last": st.column_config.NumberColumn("Δ vs last", format="%+.3f",
                                                 help="Minus the score of the window's last checkpoint."),
        "vs_last_stderr": st.column_config.NumberColumn("± (vs last)", format="%.3f")})
    st.download_button("scores.csv", lambda: out.read_bytes(), file_name="scores.csv", mime="text/csv",
                       on_click="ignore", key="evaluate.download", help="Every stored row, as relex evaluate writes.")

with state.errors_shown():
    metrics = frames.trainer_metrics(analysis.run_gram.run)
    training = [name for name in frames.reward_names(metrics) if not frames.is_held_out(name)]
    if training:
        st.subheader("Training reward")
        st.caption("Mean reward of the policy's own rollouts at each step, as the trainer logged it: a different "
                   "quantity from held-out scores, so it has its own chart. (A held-out reward the trainer "
                   "logged is on the Overview page.)")
        rows = metrics[metrics["metric"].isin(training)]
        figures.chart(charts.metrics_chart(rows, training, "Training reward (as logged)", "reward on training "
                                           "rollouts"), rows, "training_reward")
figures.offer_report()
