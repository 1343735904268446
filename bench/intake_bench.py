"""Kafka → durable ledger, end to end, next to two baselines on the same events in the same run: the
writer's own ceiling (the events POSTed in arrays) and the consumer an integrator would write by hand
(kafka-python and conditional UPDATEs). Issue #10's first closing figure.

Usage: python bench/intake_bench.py [--events 200000] [--rounds 3] [--only kafka,http,consumer]
       python bench/intake_bench.py --baseline HEAD~3 --only kafka,kafka_baseline,http   (A/B of a change)
See bench/README.md for what is measured, the targets and the checks.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import broker
import cputime
import handwritten_consumer
import intake_report
import load
import orjson
import pgstats
import report
import session
import traffic
from baseline_tree import extract, resolve_commit
from frame import Bench, ledger_command, ledger_metrics, metrics_delta
from plumbing import BenchError, Server, free_port, wait_ready

FIRST_RECORD_POLL_S = 0.005
COMMITTED_POLL_S = 0.05
# Reading the group's offsets takes CPU (this process's and the broker's) from the two cores the run
# is measured on, so they are read often only near the end (committed_poll_s).
COMMITTED_POLL_MAX_S = 1.0
RUN_DEADLINE_S = 1800.0
READ_BACK_DEADLINE_S = 300.0
PROBLEMS_SHOWN_MAX = 5
CONSUMER_HOLD_S = 120.0  # the hand-written consumer waits (connected) to be stopped, its CPU time read


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="records produced (default 200,000)")
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--duplicate-share", type=float, default=0.01, help="producer retries: sent twice")
    parser.add_argument("--junk-share", type=float, default=0.001, help="records that are no event")
    parser.add_argument("--seed", type=int, default=1, help="the traffic model's random seed")
    parser.add_argument("--array-size", type=int, default=1000, help="events per POST /v1/events (http)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent POST senders (http)")
    parser.add_argument(
        "--poll-records", type=int, default=2000, help="max_poll_records of the hand-written consumer"
    )
    parser.add_argument("--rounds", type=int, default=1, help="each run this many times, back to back")
    parser.add_argument(
        "--feed",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the kafka runs also publish the availability feed (LEDGER_FEED_ENABLED, on by default in "
        "ledger serve with Kafka); off, the kafka and http runs do the same work: the http run has no Kafka",
    )
    parser.add_argument(
        "--only", default="kafka,http,consumer", help=f"runs to make: {','.join(intake_report.RUNS)}"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="git commit whose ledger package the kafka_baseline run uses (added to the runs when given)",
    )
    session.add_common_options(parser)
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("intake_results.json")))
    args = parser.parse_args(argv)
    args.serve_argv = shlex.split(args.serve_args)
    args.runs = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.runs) - set(intake_report.RUNS)
    if unknown:
        parser.error(f"unknown runs {sorted(unknown)}; choose from {', '.join(intake_report.RUNS)}")
    if args.baseline and "kafka_baseline" not in args.runs:
        args.runs.insert(args.runs.index("kafka") if "kafka" in args.runs else 0, "kafka_baseline")
    if "kafka_baseline" in args.runs and not args.baseline:
        parser.error("the kafka_baseline run needs --baseline COMMIT")
    if args.events < args.stores or args.rounds < 1 or args.senders < 1 or not 1 <= args.array_size <= 1000:
        parser.error("--events >= --stores, --rounds and --senders >= 1, --array-size 1..1000")
    return args


class IntakeBench:
    """A round's three runs on the same records, each on a fresh database (and topic), with their checks."""

    def __init__(self, bench: Bench, made: traffic.Made) -> None:
        self.bench = bench
        self.args = bench.args
        self.made = made
        self.records = made.records
        self.junk = sum(1 for record in self.records if record.event is None)
        self.duplicates = sum(1 for record in self.records if record.kind == "duplicate")
        self.idents = Counter(record.ident for record in self.records if record.ident is not None)
        self.rounds: list[dict[str, Any]] = []
        self.launched = 0  # servers and brokers started: numbers their names and logs
        self.outcomes_this_round: dict[str, dict[traffic.Ident, str]] = {}
        self.versions_at_start = report.versions(bench)  # others may change the tree during a run
        self.baseline_commit = resolve_commit(self.args.baseline) if self.args.baseline else None
        self.baseline_tree = extract(self.baseline_commit, bench.workdir) if self.baseline_commit else None

    # -- a round ------------------------------------------------------------------------------------------

    def round(self, number: int) -> None:
        self.outcomes_this_round = {}
        measured: dict[str, Any] = {"round": number}
        runs = {
            "kafka": self.kafka_run,
            "kafka_baseline": lambda: self.kafka_run(baseline=True),
            "http": self.http_run,
            "consumer": self.consumer_run,
        }
        order = list(self.args.runs)
        if number % 2 == 0 and "kafka" in order and "kafka_baseline" in order:
            # The two Kafka runs swap places every other round: a slow stretch falls on both alike.
            first, second = order.index("kafka"), order.index("kafka_baseline")
            order[first], order[second] = order[second], order[first]
        measured["order"] = order
        for name in order:
            self.bench.load_average[f"round {number} before {name}"] = [round(x, 2) for x in os.getloadavg()]
            measured[name] = runs[name]()
        measured["ratios"] = intake_report.ratios(measured)
        self.rounds.append(measured)
        print(f"  round {number}: {intake_report.round_line(measured)}", flush=True)

    # -- (a) Kafka → the ledger ---------------------------------------------------------------------------

    def kafka_run(self, *, baseline: bool = False) -> dict[str, Any]:
        bench, total = self.bench, len(self.records)
        run = "kafka_baseline" if baseline else "kafka"
        code = (
            f"the ledger of {self.baseline_commit[:12]}" if baseline and self.baseline_commit else "this tree"
        )
        print(
            f"\n== Kafka → ledger serve (PostgreSQL, writer process, {code}): {total:,} records ==",
            flush=True,
        )
        kafka, topic, ends = self.broker_with_records(run)
        database = bench.database(f"intake_{run}")
        group = f"ledger-{topic}"
        env = self.ledger_env(database) | {
            "LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "LEDGER_KAFKA_TOPIC": topic,
            "LEDGER_KAFKA_RESULTS_TOPIC": f"{topic}.results",
            "LEDGER_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "LEDGER_KAFKA_GROUP": group,
            "LEDGER_FEED_ENABLED": "true" if self.args.feed else "false",
        }
        if baseline:
            assert self.baseline_tree is not None
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.baseline_tree), *filter(None, [env.get("PYTHONPATH")])]
            )
        bench.pg.checkpoint()
        server, port = self.start(f"ledger-{run}-{self.launched}", [*ledger_command(), "serve"], env)
        offsets = broker.GroupOffsets(kafka.bootstrap, group)
        try:
            first_count, began = self.first_consumed(server, port)
            meter = cputime.CpuMeter(server.process.pid if server.process else None, trees=kafka.tree())
            meter.start()
            waits = pgstats.WaitSampler(bench.pg, [database]).start()
            deadline = began + RUN_DEADLINE_S
            while left := offsets.left(ends):
                if not server.alive() or time.monotonic() > deadline:
                    raise BenchError(
                        f"the intake committed {offsets.committed()} of {ends}; its log ends:\n"
                        f"{server.log_tail()}"
                    )
                time.sleep(committed_poll_s(sum(ends.values()), left, time.monotonic() - began))
            elapsed = time.monotonic() - began
            cpu = cputime.report(meter.stop(), total, "event")
            wait_summary = waits.stop()
            pgstats.print_waits(wait_summary)
            metrics = metrics_delta({}, ledger_metrics(port))
            print(f"    {total / elapsed:,.0f} events/s ({total:,} records in {elapsed:.1f} s)", flush=True)
            print(intake_report.writer_line(metrics, elapsed), flush=True)
            results = [
                orjson.loads(r.value) for r in self.read_back(kafka, f"{topic}.results", total - self.junk)
            ]
            dead = self.read_back(kafka, f"{topic}.dlq", self.junk)
            outcomes = Counter(result["outcome"] for result in results)
            print(f"    results {dict(outcomes)}; dead letters {len(dead):,}", flush=True)
            self.check_first_consumed(first_count)
            self.check_kafka_results(results, dead, metrics)
            first = traffic.first_outcomes(results)
            self.check_levels(run, port, first)
            self.outcomes_this_round[run] = first
        finally:
            offsets.close()
            bench.stop_server(server)
            bench.stop_server(kafka)
        return {
            "events": total,
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(total / elapsed, 1),
            "outcomes": dict(outcomes),
            "dead_letters": len(dead),
            "partition_ends": ends,
            "ledger_metrics": metrics,
            "postgres_waits": wait_summary,
            "postgres_counters": self.counters_after(database, total),
            **cpu,
        }

    def first_consumed(self, server: Server, port: int) -> tuple[float, float]:
        """Waits (past the group join) for the intake's first record: the count /metrics showed at its
        first answer (0 if the start was seen), and when a record was first counted."""
        deadline = time.monotonic() + self.args.ready_timeout
        first_count: float | None = None
        while time.monotonic() < deadline:
            if not server.alive():
                raise BenchError(f"{server.name} exited; its log ends:\n{server.log_tail()}")
            consumed = ledger_metrics(port).get("ledger_kafka_records_consumed_total")
            if consumed is not None:
                first_count = consumed if first_count is None else first_count
                if consumed > 0:
                    return first_count, time.monotonic()
            time.sleep(FIRST_RECORD_POLL_S)
        raise BenchError(f"the intake consumed nothing within {self.args.ready_timeout:.0f} s")

    def check_first_consumed(self, first_count: float) -> None:
        self.bench.check(
            "kafka: the first record consumed was seen (the timing starts there)",
            first_count == 0,
            f"/metrics first showed {first_count:,.0f} records consumed",
        )

    def check_kafka_results(
        self, results: list[dict[str, Any]], dead: list[Any], metrics: dict[str, float]
    ) -> None:
        check = self.bench.check
        found = Counter((result["source"], result["id"]) for result in results)
        missing, doubled = self.idents - found, found - self.idents
        check(
            "kafka: one result per event, none published twice",
            not missing and not doubled,
            f"{len(results):,} results for {self.idents.total():,} events; "
            f"{missing.total()} missing, {doubled.total()} extra {list(doubled)[:3]}",
        )
        check(
            "kafka: every record that is no event was dead-lettered",
            len(dead) == self.junk,
            f"{len(dead)} dead letters, {self.junk} such records",
        )
        self.check_duplicates("kafka", results)
        failed = metrics.get("ledger_kafka_batches_failed_total", 0)
        check("kafka: no batch failed and was read again", failed == 0, f"{failed:.0f} failed batches")

    def check_duplicates(self, run: str, results: list[dict[str, Any]]) -> None:
        """Each event's first result is its decision; every later copy is answered `duplicate`."""
        seen: set[traffic.Ident] = set()
        wrong = []
        for result in results:
            ident = (result["source"], result["id"])
            expected = {"duplicate"} if ident in seen else {"accepted", "rejected"}
            if result["outcome"] not in expected:
                wrong.append(f"{ident}: {result['outcome']}")
            seen.add(ident)
        self.bench.check(
            f"{run}: first copies accepted or rejected, later ones duplicate ({self.duplicates:,} resent)",
            not wrong,
            f"{len(wrong)} wrong: {wrong[:PROBLEMS_SHOWN_MAX]}",
        )

    # -- (b) the same events POSTed: the writer's own ceiling ----------------------------------------------

    def http_run(self) -> dict[str, Any]:
        bench, args = self.bench, self.args
        by_store = traffic.stores_in_order(self.records)
        sent = sum(len(values) for values in by_store.values())
        print(
            f"\n== POST /v1/events: {sent:,} events (the records that are events), arrays of "
            f"{args.array_size:,}, {args.senders} senders, each store's arrays in order ==",
            flush=True,
        )
        database = bench.database("intake_http")
        bench.pg.checkpoint()
        server, port = self.start(
            f"ledger-http-{self.launched}",
            [*ledger_command(), "serve"],
            self.ledger_env(database),
            "/readyz",
        )
        try:
            meter = cputime.started(server)
            waits = pgstats.WaitSampler(bench.pg, [database]).start()
            run = load.send_store_arrays(port, by_store, args.senders, args.array_size, RUN_DEADLINE_S)
            cpu = cputime.report(meter.stop(), len(run.results), "event")
            wait_summary = waits.stop()
            pgstats.print_waits(wait_summary)
            metrics = metrics_delta({}, ledger_metrics(port))
            summary = run.as_dict()
            print(
                f"    {run.per_s:,.0f} events/s ({len(run.results):,} answered in {run.requests} requests, "
                f"{run.elapsed_s:.1f} s; request p99 {run.latency_ms['p99']:.0f} ms); outcomes "
                f"{summary['outcomes']}",
                flush=True,
            )
            print(intake_report.writer_line(metrics, run.elapsed_s), flush=True)
            found = Counter((result["source"], result["id"]) for result in run.results)
            bench.check(
                "http: every event answered, once",
                not run.problems and found == self.idents and len(run.results) == sent,
                f"{len(run.results):,} results for {sent:,} events sent; problems {run.problems[:2]}",
            )
            self.check_duplicates("http", run.results)
            first = traffic.first_outcomes(run.results)
            self.check_levels("http", port, first)
            if "kafka" in self.outcomes_this_round:
                differ = [
                    ident
                    for ident, outcome in first.items()
                    if self.outcomes_this_round["kafka"].get(ident) != outcome
                ]
                bench.check(
                    "http: every event has the outcome it had from Kafka (same events, same order per store)",
                    not differ,
                    f"{len(differ)} differ: {differ[:PROBLEMS_SHOWN_MAX]}",
                )
        finally:
            bench.stop_server(server)
        return summary | {
            "ledger_metrics": metrics,
            "postgres_waits": wait_summary,
            "postgres_counters": self.counters_after(database, len(run.results)),
            **cpu,
        }

    # -- (c) the hand-written consumer ---------------------------------------------------------------------

    def consumer_run(self) -> dict[str, Any]:
        bench, args, total = self.bench, self.args, len(self.records)
        print(
            f"\n== hand-written consumer: kafka-python, conditional UPDATEs on a plain table, one "
            f"transaction per poll of up to {args.poll_records:,}: {total:,} records ==",
            flush=True,
        )
        kafka, topic, ends = self.broker_with_records("consumer")
        database = bench.database("intake_consumer")
        handwritten_consumer.prepare_table(bench.pg.conninfo(database), self.made.stores, self.made.skus)
        bench.pg.checkpoint()
        name = f"handwritten-consumer-{self.launched}"
        report_path = bench.workdir / f"{name}.json"
        started_path = bench.workdir / f"{name}.started"
        group = f"handwritten-{topic}"
        argv = [
            sys.executable,
            str(Path(handwritten_consumer.__file__).resolve()),
            f"--bootstrap={kafka.bootstrap}",
            f"--topic={topic}",
            f"--group={group}",
            f"--conninfo={bench.pg.conninfo(database)}",
            "--ends=" + ",".join(f"{p}:{end}" for p, end in sorted(ends.items())),
            f"--report={report_path}",
            f"--started-file={started_path}",
            f"--poll-records={args.poll_records}",
            f"--hold-s={CONSUMER_HOLD_S}",
        ]
        consumer = Server(name, argv, dict(os.environ), bench.workdir / f"{name}.log")
        bench.servers.append(consumer)
        consumer.start()
        try:
            self.wait_for(started_path.exists, consumer, "its first poll with records")
            trees = kafka.tree() | ({"consumer": consumer.process.pid} if consumer.process else {})
            meter = cputime.CpuMeter(None, trees=trees)
            meter.start()
            waits = pgstats.WaitSampler(bench.pg, [database]).start()
            self.wait_for(
                report_path.exists, consumer, "the consumer's report", RUN_DEADLINE_S, COMMITTED_POLL_S
            )
            cpu = cputime.report(meter.stop(), total, "event")  # while it and its backend are still there
            done = orjson.loads(report_path.read_bytes())
            wait_summary = waits.stop()
            pgstats.print_waits(wait_summary)
            offsets = broker.GroupOffsets(kafka.bootstrap, group)
            try:
                committed = offsets.committed()
            finally:
                offsets.close()
        finally:
            bench.stop_server(consumer)
            bench.stop_server(kafka)
        rate = total / done["elapsed_s"]
        print(
            f"    {rate:,.0f} events/s ({total:,} records in {done['elapsed_s']:.1f} s, "
            f"{done['polls']} polls); applied {done['applied']:,}, refused {done['refused']:,}, "
            f"skipped {done['skipped']:,}",
            flush=True,
        )
        self.check_consumer(database, done, committed, ends)
        return {
            "events": total,
            "elapsed_s": round(done["elapsed_s"], 3),
            "events_per_s": round(rate, 1),
            "consumer_report": done,
            "committed": committed,
            "postgres_waits": wait_summary,
            "postgres_counters": self.counters_after(database, total),
            **cpu,
        }

    def check_consumer(
        self, database: str, done: dict[str, Any], committed: dict[int, int], ends: dict[int, int]
    ) -> None:
        check, pg = self.bench.check, self.bench.pg
        total = len(self.records)
        check(
            "consumer: every record processed once (applied + refused + skipped = records)",
            done["records"] == total and done["applied"] + done["refused"] + done["skipped"] == total,
            f"records {done['records']:,}, applied {done['applied']:,}, refused {done['refused']:,}, "
            f"skipped {done['skipped']:,}",
        )
        check(
            "consumer: every offset committed",
            committed == ends,
            f"committed {dict(sorted(committed.items()))}, ends {dict(sorted(ends.items()))}",
        )
        on_hand, reserved = pg.execute("SELECT sum(on_hand), sum(reserved) FROM stock", database)[0]
        held = pg.execute("SELECT coalesce(sum(remaining), 0) FROM reservation_line", database)[0][0]
        check(
            "consumer: the table holds the deltas its UPDATEs reported",
            (on_hand, reserved) == (done["on_hand_delta"], done["reserved_delta"]) and held == reserved,
            f"sum(on_hand) {on_hand:,} (reported {done['on_hand_delta']:,}), sum(reserved) {reserved:,} "
            f"(reported {done['reserved_delta']:,}, held by reservations {held:,})",
        )

    # -- shared steps ---------------------------------------------------------------------------------------

    def broker_with_records(self, run: str) -> tuple[broker.Broker, str, dict[int, int]]:
        """A fresh broker with a fresh topic (and its results and dead-letter topics) holding every record."""
        self.launched += 1
        kafka = broker.new_broker(self.bench.workdir / f"tansu-{run}-{self.launched}.log")
        self.bench.servers.append(kafka)
        kafka.start()
        topic = f"stock.events.{self.bench.nonce}.{self.launched}"
        broker.create_topics(
            kafka.bootstrap, [topic, f"{topic}.results", f"{topic}.dlq"], self.args.partitions
        )
        began = time.monotonic()
        partitions = broker.produce(kafka.bootstrap, topic, [(r.key, r.value) for r in self.records])
        ends = broker.partition_ends(partitions)
        print(
            f"  produced {len(partitions):,} records in {time.monotonic() - began:.1f} s to {topic} "
            f"({', '.join(f'p{p} {n:,}' for p, n in sorted(ends.items()))})",
            flush=True,
        )
        return kafka, topic, ends

    def ledger_env(self, database: str) -> dict[str, str]:
        return dict(os.environ, LEDGER_DATABASE_URL=self.bench.pg.url(database), LEDGER_HTTP_HOST="127.0.0.1")

    def start(
        self, name: str, argv: list[str], env: dict[str, str], ready: str = "/healthz"
    ) -> tuple[Server, int]:
        """A ledger server, ready when `ready` answers 200 (the Kafka run waits for /healthz only: /readyz
        waits for the group join, and the intake may be consuming by then)."""
        self.launched += 1
        port = free_port()
        server = Server(
            name, [*argv, "--port", str(port), *self.args.serve_argv], env, self.bench.workdir / f"{name}.log"
        )
        self.bench.servers.append(server)
        server.start()
        wait_ready(server, port, ready, self.args.ready_timeout)
        return server, port

    def wait_for(
        self,
        done: Callable[[], bool],
        process: Server,
        what: str,
        deadline_s: float | None = None,
        poll_s: float = FIRST_RECORD_POLL_S,
    ) -> None:
        deadline = time.monotonic() + (deadline_s or self.args.ready_timeout)
        while not done():
            if not process.alive() and not done():
                raise BenchError(f"{process.name} exited before {what}; its log ends:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"gave up waiting for {what}; {process.name}'s log ends:\n{process.log_tail()}"
                )
            time.sleep(poll_s)

    def read_back(self, kafka: broker.Broker, topic: str, expected: int) -> list[Any]:
        return broker.read_topic(kafka.bootstrap, topic, expected, READ_BACK_DEADLINE_S)

    def check_levels(self, run: str, port: int, first: dict[traffic.Ident, str]) -> None:
        """Every store's levels (every SKU of the catalogue) against the accepted events' effects."""
        expected = traffic.expected_levels(self.records, first)
        found: dict[tuple[str, str], traffic.Level] = {}
        for store in self.made.stores:
            levels = self.bench.settled_levels(port, self.made.skus, store)
            found.update(
                {(store, sku): (level["on_hand"], level["reserved"]) for sku, level in levels.items()}
            )
        wrong = traffic.level_mismatches(expected, found)
        accepted = sum(1 for outcome in first.values() if outcome == "accepted")
        self.bench.check(
            f"{run}: every level equals the effects of the {accepted:,} accepted events",
            not wrong,
            f"{len(found):,} levels read, {len(wrong)} differ: {wrong[:PROBLEMS_SHOWN_MAX]}",
        )

    def counters_after(self, database: str, events: int) -> dict[str, int]:
        """PostgreSQL's counters over the database's life (start, run, checks), once its clients left."""
        pgstats.after_clients_left()
        found = pgstats.counters(self.bench.pg, database)
        pgstats.print_counters(found, events)
        return found


def committed_poll_s(total: int, left: int, since_start_s: float) -> float:
    """How long to wait before reading the committed offsets again: a quarter of the time left at
    the rate so far, between COMMITTED_POLL_S and COMMITTED_POLL_MAX_S."""
    done = total - left
    if done <= 0 or since_start_s <= 0:
        return COMMITTED_POLL_S
    left_s = left * since_start_s / done
    return min(COMMITTED_POLL_MAX_S, max(COMMITTED_POLL_S, left_s / 4))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    made = traffic.make(args.stores, args.skus, args.events, args.duplicate_share, args.junk_share, args.seed)
    print(
        f"{len(made.records):,} records over {args.stores} stores x {args.skus:,} SKUs, "
        f"{args.partitions} partitions keyed by store: {traffic.describe(made.records)} "
        f"(made in {time.time() - started:.0f} s)",
        flush=True,
    )
    holder: dict[str, IntakeBench] = {}

    def measure(bench: Bench) -> None:
        intake = holder["intake"] = IntakeBench(bench, made)
        for number in range(1, args.rounds + 1):
            print(f"\n-- round {number} of {args.rounds}", flush=True)
            intake.round(number)
        intake_report.print_summary(intake)

    def write(bench: Bench, error: str | None) -> None:
        intake = holder.get("intake")
        if intake is None:
            return
        Path(args.output).write_text(report.to_json(intake_report.results(args, intake, started, error)))
        print(
            f"\nwrote {args.output} ({time.time() - started:.0f} s in all)",
            file=sys.stderr if error else sys.stdout,
        )

    return session.run(args, measure, write, prefix="intake-bench-")


if __name__ == "__main__":
    sys.exit(main())
