"""Collect a transition dataset: rollout workers drive with an acting policy (the expert, the
expert with DART perturbations, a checkpoint, random) and write sharded Parquet (dataset/).

    python collect.py --config configs/collect/expert.yaml                       # 2 workers on Ray
    python collect.py --config configs/collect/expert.yaml run.mode=local run.total_env_steps=2000
    python collect.py --config configs/collect/expert.yaml collect.output=data/town01-dart

Running it again on the same directory resumes: the transitions already there count toward
run.total_env_steps, new workers take new stream ids. Prints the dataset summary at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys

from configs.loader import ConfigError, load_config
from configs.schema import Config
from dataset.parquet import DatasetError
from runtimes.collection import CollectionPlan

logger = logging.getLogger("collect")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", action="append", required=True, help="YAML file(s), e.g. configs/collect/expert.yaml"
    )
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. run.total_env_steps=5000")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        from runner.preflight import check_maps, check_offline_inputs

        check_maps(config)
        check_offline_inputs(config)
        if config.run.mode == "offline":
            raise ConfigError("run.mode = offline collects nothing: use local or ray")
        from runtimes.collection import collection_config, collection_plan

        config = collection_config(config)
        from runner.limits import check_collection_limits

        check_collection_limits(config)  # the collectors against the machine's memory and cores
        plan = collection_plan(config)
    except (ConfigError, DatasetError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "collecting %d transitions into %s (%d already there) with policy %s on %s, %s traffic",
        plan.transitions_to_collect,
        plan.directory,
        plan.transitions_on_disk,
        config.collect.policy,
        config.env.town or "the default town",
        config.env.traffic,
    )
    if plan.transitions_to_collect:
        try:
            collect_into(config, plan)
        except KeyboardInterrupt:
            logger.warning("interrupted: what was collected is in %s; run the same command to resume", plan.directory)
            return 130
    from dataset.summary import format_summary, summarize

    print(format_summary(summarize(plan.directory)))
    return 0


def collect_into(config: Config, plan: CollectionPlan) -> dict[int, dict]:
    """The collection runtime (run.mode's transport) until the plan's budget is spent; every stream's
    last report (rows_written, transitions_written, episodes, ...)."""
    from runner.loop import collect
    from runtimes.collection import CollectionProgress
    from runtimes.registry import make_runtime

    runtime = make_runtime(
        config, plan.directory, "collection", first_stream=plan.first_stream, env_steps=plan.transitions_on_disk
    )
    progress = CollectionProgress(plan, config.run.progress_every_s)
    try:
        collect(runtime, lambda report, final: progress.update(report, final))
        return runtime.worker_reports()
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    sys.exit(main())
