"""One training job across all hosts: start every worker at once, watch, end it as a whole.

The first worker that exits non-zero, dies, loses contact or misses the start deadline stops
the job (launcher/failure.py decides which): every other worker's process group gets TERM, a
grace period, then KILL; logs are mirrored one last time and cluster.json records the
failure. Ctrl-C ends it the same way. With restarts left, a failed job is started again as a
whole on the same run directory, and the trainer's --backup resumes it from its last
completed epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launcher.attempts import AttemptedJob, StoppedByUser
from launcher.backup import latest_backup
from launcher.contact import with_contact
from launcher.display import Output, WorkerRow, log_tail
from launcher.exits import describe_exit, first_failure, job_exit_code
from launcher.failure import Failure, decide, exit_failure, stall_failure
from launcher.netcheck import Peer as NetworkPeer
from launcher.netcheck import check_network
from launcher.options import WatchOptions
from launcher.partition import lost_peers, network_lines, with_network
from launcher.record import stopped_by_user
from launcher.remote import HostError
from launcher.results import HostResults
from launcher.summary import Peer, failure_report
from launcher.watch import QuietClock, poll_all, view
from launcher.worker import Worker, WorkerState
from runformat import BACKUP_DIR


class Job(AttemptedJob[Failure]):
    """Start, watch and end all workers of one run; keeps cluster.json up to date."""

    def __init__(
        self,
        workers: Sequence[Worker],
        local_dir: Path,
        cluster: dict[str, Any],
        out: Output,
        watch: WatchOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = list(workers)
        self.local_dir = local_dir
        self.cluster = cluster
        self.out = out
        self.watch = watch
        self.clock = clock
        self.quiet = QuietClock(lambda: self.clock())
        self.failure: Failure | None = None
        self.restarts = 0
        self.attempts: list[dict[str, Any]] = []
        self.training: set[int] = set()  # workers seen training in this attempt
        for w in self.workers:
            w.contact.timeout = watch.contact_timeout

    def _start(self) -> None:
        self.training.clear()
        self.out.note(f"starting {len(self.workers)} worker(s)")
        HostResults.run(self.workers, lambda w: w.start()).raise_first()
        self.save(state="running")

    def _host_failure(self, exc: HostError) -> Failure:
        return Failure(exc.host.index, exc.host.label, exc.message, [])

    def _exit_code(self, failure: Failure) -> int | None:
        return self.workers[failure.index].exit_code

    def _reset(self, note: str) -> None:
        """Every worker (and every host's backup) ready for the next attempt."""
        self.quiet.clear()
        HostResults.run(self.workers, lambda w: self._reaching(w, w.reset, note)).raise_first()
        backup = self.local_dir / BACKUP_DIR
        files = latest_backup(backup)
        others = self._other_ssh_workers()
        share = HostResults.run(others, lambda w: self._reaching(w, w.share_backup, files, backup))
        share.raise_first()

    def _reaching(self, worker: Worker, step: Callable[..., None], *args: Any) -> None:
        """A step of a restart that may be repeated: retried while the host cannot be reached,
        for up to --contact-timeout, like every poll."""

        def warn(text: str) -> None:
            self.out.line(f"WARNING: {text}")

        with_contact(lambda: step(*args), worker.prefix, self.watch.contact_timeout, warn)

    def _other_ssh_workers(self) -> list[Worker]:
        """The workers that have their own copy of the run directory, but the chief."""
        return [w for w in self.workers if w.mirror is not None and w.index != 0]

    def _watch(self) -> None:
        started_at = self.clock()
        while True:
            self._tick()
            if stopped_by_user(self.local_dir):
                raise StoppedByUser
            if self.failure is not None or all(w.ended for w in self.workers):
                return
            views = [view(w, self.quiet) for w in self.workers]
            self.failure = decide(views, self.clock(), started_at, self.watch)
            if self.failure is not None:
                return
            time.sleep(self.watch.interval)

    def _silent_worker(self) -> Worker | None:
        """A running worker whose status has not changed for longer than its phase allows."""
        views = [view(w, self.quiet) for w in self.workers]
        found = stall_failure(views, self.clock(), self.watch)
        return self.workers[found.index] if found else None

    def _tick(self) -> None:
        """Poll and mirror every worker, print their new log lines, and see who failed."""
        poll_all(self.workers)
        self._print_logs()
        self._print_warnings()
        self._record_disks()
        views = [view(w, self.quiet) for w in self.workers]
        if self.failure is None:
            self.failure = exit_failure(views)
        started = [
            w
            for w, v in zip(self.workers, views, strict=True)
            if w.index not in self.training and WorkerState.of(v.status) is WorkerState.RUNNING
        ]
        if started:
            self.training.update(w.index for w in started)
            names = ", ".join(f"worker {w.index} ({w.host.label})" for w in started)
            self.out.line(f"started training: {names}")
        self._show()

    def _record_disks(self) -> None:
        """cluster.json `hosts[i].disk` follows each host's disk: full, then room again."""
        hosts = {h.get("index"): h for h in self.cluster.get("hosts") or []}
        changed = False
        for w in self.workers:
            entry = hosts.get(w.index)
            record = w.host_disk.changed(entry.get("disk")) if entry is not None else None
            if entry is not None and record is not None:
                entry["disk"] = record
                changed = True
        if changed:
            self.save()

    def _show(self) -> None:
        self.out.table([self._row(w) for w in self.workers])

    def _row(self, worker: Worker) -> WorkerRow:
        note = ""
        if worker.frozen and not worker.ended:
            note = "STOPPED (SIGSTOP?)"
        elif worker.ended:
            note = describe_exit(worker.exit_code) if not worker.gone else "gone"
        disk = "disk full" if worker.host_disk.full and not worker.ended else ""
        return WorkerRow(worker.index, worker.host.label, worker.status(), note, disk=disk)

    def _print_warnings(self) -> None:
        for w in self.workers:
            warnings, w.warnings = w.warnings, []
            self.out.lines([f"WARNING: {w.prefix} {text}" for text in warnings])

    def _print_logs(self, final: bool = False) -> None:
        for w in self.workers:
            lines = w.tail.flush() if final else w.tail.new_lines()
            self.out.worker_output(w.index, w.prefix, lines)

    def _stop(self, bring_home: bool = True) -> None:
        """TERM, grace, KILL on every host at once; then one last mirror of every host."""
        live = [w for w in self.workers if not (w.ended and w.exit_code is not None)]
        grace = self.watch.grace
        self.out.note(f"stopping {len(live)} worker(s): TERM, up to {grace:g} s, then KILL")
        for w, error in HostResults.run(live, lambda w: w.stop(grace)).failed:
            self.out.line(f"{w.prefix} could not stop: {error}")
        if bring_home:
            self._bring_home()

    def _bring_home(self) -> list[str]:
        """One last poll and mirror of every host; what could not be brought home."""
        problems = []
        for w, error in poll_all(self.workers, self.clock, everyone=True).failed:
            self.out.line(f"{w.prefix} could not fetch its files: {error}")
            problems.append(f"{w.prefix} {error.message}")
        self._print_logs(final=True)
        self._print_warnings()
        for w in self.workers:
            if w.mirror is not None and w.mirror.disk_error is not None:
                problems.append(str(w.mirror.disk_error))
        self._show()
        return problems

    def _drop_backups(self) -> None:
        """The chief's host empties its own backup; the mirrored and shared copies go."""
        super()._drop_backups()
        HostResults.run(self._other_ssh_workers(), lambda w: w.drop_backup())

    def _exit_codes(self) -> dict[str, int | None]:
        return {str(w.index): w.exit_code for w in self.workers}

    def save_end(self, **changes: Any) -> bool:
        """The final cluster.json: exit codes, and the bytes mirrored from each SSH host."""
        synced = {str(w.index): w.mirror.bytes_received for w in self.workers if w.mirror}
        return self.save(
            finished=time.time(),
            exit_codes=self._exit_codes(),
            sync_bytes=synced,
            restarts=self.restarts,
            attempts=self.attempts,
            **changes,
        )

    def _failed_after_all(self) -> Failure | None:
        codes = {w.index: w.exit_code for w in self.workers}
        if job_exit_code(codes, len(self.workers)) == 0:
            return None
        bad = self.workers[first_failure(codes) or 0]
        return Failure(bad.index, bad.host.label, describe_exit(bad.exit_code), [])

    def _explain(self, failure: Failure) -> None:
        """A worker that lost its peers, with none killed, frozen or out of contact: stop
        every worker, so that their tf_ports are free, and check the network between their
        hosts as `fab check` does; a cut network becomes the cause (launcher/partition.py)."""
        cause = self.workers[failure.index]
        if not cause.ended or not lost_peers(cause.status()):
            return
        if any(w.gone or w.frozen or (w.exit_code or 0) < 0 for w in self.workers):
            return  # a peer was killed, froze or vanished: that is the cause
        self.out.line(
            f"{cause.prefix} lost contact with its peers: {self.stopping}, then checking"
            " the network between the workers"
        )
        self._stop(bring_home=False)
        peers = [NetworkPeer(w.shell, w.python) for w in self.workers]
        try:
            problems = check_network(peers, [w.host for w in self.workers]).problems
        except HostError as exc:
            problems = [f"worker {exc.host.index} ({exc.host.label}): {exc.message}"]
        with_network(failure, problems)

    def _report(self, failure: Failure) -> list[str]:
        worker = self.workers[failure.index]
        peers = [
            Peer(w.index, w.host.label, w.exit_code, w.status())
            for w in self.workers
            if w is not worker
        ]
        log = log_tail(worker.tail.path, 200)
        report = failure_report(failure, worker.status(), log, peers)
        return [
            *report,
            *network_lines(failure),
            f"all workers stopped; logs are in {self.local_dir}",
        ]
