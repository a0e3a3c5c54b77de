"""Job identification of a calling process, on a made-up process table and clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from qosfs.jobid import (
    Identity,
    JobResolver,
    groups_from_status,
    job_from_cgroup,
    job_from_environ,
    parse_environ,
)
from tokenbucket_daemon.caller import Caller

V1 = ("12:pids:/slurm/uid_1000/job_777/step_0/task_0\n"
      "11:memory:/slurm/uid_1000/job_777/step_0/task_0\n1:name=systemd:/user.slice\n")
V2 = "0::/system.slice/slurmstepd.scope/job_4242/step_batch/user/task_0\n"


@dataclass
class FakeProc:
    starts: dict[int, str] = field(default_factory=dict)
    cgroups: dict[int, str] = field(default_factory=dict)
    environs: dict[int, bytes] = field(default_factory=dict)
    group_lists: dict[int, tuple[int, ...]] = field(default_factory=dict)
    reads: int = 0
    environ_reads: int = 0

    def start_time(self, pid: int) -> str | None:
        return self.starts.get(pid)

    def cgroup(self, pid: int) -> str | None:
        self.reads += 1
        return self.cgroups.get(pid)

    def environ(self, pid: int) -> bytes | None:
        self.environ_reads += 1
        return self.environs.get(pid)

    def groups(self, pid: int) -> tuple[int, ...] | None:
        return self.group_lists.get(pid)

    def user_name(self, uid: int) -> str:
        return {1000: "ana", 0: "root"}.get(uid, str(uid))


def test_cgroup_paths_of_slurm_v1_and_v2_name_the_job() -> None:
    assert job_from_cgroup(V1) == "777"
    assert job_from_cgroup(V2) == "4242"
    assert job_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") is None
    # "job_" must be a whole path component followed by digits only.
    assert job_from_cgroup("0::/myjob_12/x\n") is None
    assert job_from_cgroup("0::/job_12abc\n") is None
    assert job_from_cgroup("0::/a/job_12\n") == "12"


def test_environ_parsing_and_job_variable() -> None:
    env = parse_environ(b"HOME=/h\0SLURM_JOB_ID=55\0EMPTY=\0junk\0X=a=b\0\xff=1\0")
    assert env["SLURM_JOB_ID"] == "55" and env["EMPTY"] == "" and env["X"] == "a=b"
    assert "junk" not in env
    assert job_from_environ(env) == "55"
    assert job_from_environ({"SLURM_JOB_ID": "abc"}) is None
    assert job_from_environ({}) is None


ANA = Caller(1000, 1000, ())


def test_a_job_named_in_the_environment_is_not_trusted_by_default() -> None:
    # A process outside any job cgroup that sets SLURM_JOB_ID=999 (anyone can) is charged
    # to its user's class, and its environment is not even read.
    p = FakeProc(starts={2: "200"}, cgroups={2: "0::/user.slice\n"},
                 environs={2: b"SLURM_JOB_ID=999\0SLURM_JOB_ACCOUNT=chem\0"})
    assert JobResolver(p).resolve(2, 1000, 1000, 0.0) == Identity(
        "user:ana", "ana", "", "user", ANA)
    assert p.environ_reads == 0
    # The site may turn it on (unsafe: documented as such).
    assert JobResolver(p, trust_environ=True).resolve(2, 1000, 1000, 0.0) == Identity(
        "999", "ana", "chem", "environ", ANA)


def test_order_cgroup_then_environment_if_trusted_then_user() -> None:
    p = FakeProc(starts={1: "100", 2: "200", 3: "300"},
                 cgroups={1: V1, 2: "0::/user.slice\n", 3: "0::/\n"},
                 environs={1: b"SLURM_JOB_ID=9\0SLURM_JOB_ACCOUNT=phys\0",
                           2: b"SLURM_JOB_ID=88\0SLURM_JOB_ACCOUNT=chem\0", 3: b"PATH=/bin\0"})
    for trust in (False, True):
        r = JobResolver(p, trust_environ=trust)
        # The cgroup wins; the environment's account belongs to another job and is dropped.
        assert r.resolve(1, 1000, 1000, 0.0) == Identity("777", "ana", "", "cgroup", ANA)
        assert r.resolve(3, 1000, 1000, 0.0) == Identity("user:ana", "ana", "", "user", ANA)
    assert JobResolver(p, trust_environ=True).resolve(2, 1000, 1000, 0.0).job == "88"
    assert JobResolver(p).resolve(2, 1000, 1000, 0.0).job == "user:ana"
    # The account is taken with the cgroup's job when the environment names that job.
    p.environs[1] = b"SLURM_JOB_ID=777\0SLURM_JOB_ACCOUNT=phys\0"
    assert JobResolver(p).resolve(1, 0, 0, 0.0) == Identity(
        "777", "root", "phys", "cgroup", Caller(0, 0, ()))


def test_credentials_come_from_the_request_and_the_process_groups() -> None:
    p = FakeProc(starts={4: "400"}, cgroups={4: V2}, group_lists={4: (1000, 27, 5000)})
    who = JobResolver(p).resolve(4, 1000, 100, 0.0)
    assert who.caller == Caller(1000, 100, (1000, 27, 5000))
    # A process whose groups cannot be read (gone, or pid 0) goes with none.
    assert JobResolver(p).resolve(9, 1000, 100, 0.0).caller == Caller(1000, 100, ())


def test_status_groups_line() -> None:
    status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 100 1000 \nNSpid:\t1\n"
    assert groups_from_status(status) == (27, 100, 1000)
    assert groups_from_status("Groups:\t\n") == ()
    assert groups_from_status("Name:\tx\n") is None
    assert groups_from_status("Groups:\tabc\n") is None


def test_cache_hits_until_ttl_pid_reuse_or_exit() -> None:
    p = FakeProc(starts={5: "100"}, cgroups={5: V2})
    r = JobResolver(p, ttl=5.0)
    assert r.resolve(5, 1000, 1000, 0.0).job == "4242"
    assert r.resolve(5, 1000, 1000, 4.9).job == "4242"
    assert r.lookups == 1
    # Moved into another job's cgroup (pam_slurm_adopt): seen once the entry expires.
    p.cgroups[5] = V1
    assert r.resolve(5, 1000, 1000, 4.95).job == "4242"
    assert r.resolve(5, 1000, 1000, 5.0).job == "777"
    assert r.lookups == 2
    # The pid is reused by a new process (another start time): looked up at once.
    p.starts[5], p.cgroups[5] = "999", "0::/\n"
    assert r.resolve(5, 1000, 1000, 5.1).job == "user:ana"
    assert r.lookups == 3
    # The same process with other ids (it ran a setuid program, which keeps the pid and
    # its start time): looked up again, the cached credentials are not reused.
    assert r.resolve(5, 0, 0, 5.15).caller == Caller(0, 0, ())
    assert r.lookups == 4
    assert r.resolve(5, 1000, 1000, 5.16).caller == ANA
    assert r.lookups == 5
    # A process that is gone is not cached (its start time cannot be read).
    del p.starts[5]
    r.resolve(5, 1000, 1000, 5.2)
    r.resolve(5, 1000, 1000, 5.3)
    assert r.lookups == 7


def test_cache_is_bounded_least_recently_used_first() -> None:
    p = FakeProc(starts={i: str(i) for i in range(1, 6)})
    r = JobResolver(p, capacity=3)
    for pid in (1, 2, 3):
        r.resolve(pid, 0, 0, 0.0)
    r.resolve(1, 0, 0, 0.1)          # 1 is now the most recent
    r.resolve(4, 0, 0, 0.2)          # evicts 2
    n = r.lookups
    r.resolve(1, 0, 0, 0.3)
    r.resolve(3, 0, 0, 0.3)
    assert r.lookups == n
    r.resolve(2, 0, 0, 0.4)
    assert r.lookups == n + 1


def test_pid_zero_kernel_requests_fall_to_the_user_class() -> None:
    p = FakeProc()
    assert JobResolver(p, trust_environ=True).resolve(0, 0, 0, 0.0) == Identity(
        "user:root", "root", "", "user", Caller(0, 0, ()))
    assert p.reads == 0 and p.environ_reads == 0
