"""The interactive ``fixloop demo`` in a pseudo-terminal, as a person runs it (pexpect): its human gate shows the
Jira issue, the merge request and the diff stat, and the command that approves it elsewhere; that command, run as
printed from the same directory, approves the merge request, and the waiting prompt notices and goes on; an empty
answer does not approve (``[y/N]``). About 60 s on 2 cores: the demo runs until its second gate, then Ctrl-C."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parents[2]
GATE = re.compile(r"Approve and merge !(\d+) as reviewer now\? \[y/N\] ")


def test_the_demo_prompt_returns_when_the_merge_request_is_approved_elsewhere(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    env.update(TERM="xterm", COLUMNS="250")
    demo = pexpect.spawn(
        sys.executable,
        ["-m", "fixloop", "demo", "--state-dir", str(state), "--timeout", "600", "--no-keep"],
        cwd=str(ROOT),
        env=env,
        dimensions=(60, 250),
        encoding="utf-8",
        codec_errors="replace",
        timeout=240,
    )
    log = tmp_path / "demo-pty.log"
    demo.logfile_read = log.open("w")
    try:
        demo.expect(GATE)
        first = int(demo.match.group(1))
        gate = demo.before[demo.before.rfind("gate") - 40 :]
        assert f"merge request !{first}: http" in gate, gate
        assert re.search(r"Jira OPS-\d+: http\S+/browse/OPS-\d+", gate), gate
        assert re.search(r"\d+ files? changed, \+\d+ -\d+: \S", gate), gate
        hint = re.search(r"or approve it elsewhere: in GitLab, or (.+approve \d+ --state-dir \S+)", gate)
        assert hint, gate
        command = shlex.split(hint.group(1).strip())
        assert command[0] != "fixloop" or (ROOT / command[0]).exists(), command  # typed as printed, it works
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert f"!{first} approved by reviewer and merged" in done.stdout
        # the prompt nobody answered notices the approval and the demo goes on to the next gate
        demo.expect(rf"!{first} was approved elsewhere by reviewer")
        demo.expect(GATE)
        second = int(demo.match.group(1))
        assert second != first
        demo.sendline("")  # Enter alone: no
        demo.expect(rf"left !{second} waiting")
    finally:
        if demo.isalive():
            demo.sendintr()
            demo.expect(pexpect.EOF, timeout=60)
        demo.close()
        demo.logfile_read.close()
    assert demo.exitstatus != 0 or demo.signalstatus is not None  # stopped by Ctrl-C, not finished
