"""The CPU's vector path that this process computes on, for `make test-portable`.

`probe`: one line with the 512³ float32 matmul probe on one and two threads and the kernels ATen dispatches to.
`same-as-native`: exit 0 when the emulated path set in this process's environment (`ONEDNN_MAX_CPU_ISA`,
`ATEN_CPU_CAPABILITY`) computes with the same kernels as the machine's own path, so that running the checks under it
again would repeat the native run (an AVX2-only CPU told to use AVX2); exit 1 when it differs. Either refuses a value
of those variables that its library would ignore (`check_environment`).

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python tools/vector_path.py probe
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python tools/vector_path.py same-as-native
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

EMULATING = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


# the values each library reads (any other is ignored by it, silently: the run would be on the native path). ATen
# takes the exact lower-case word of a capability its build has (torch 2.14's DispatchStub.h: AVX2 and AVX512 on x86,
# VSX, ZVECTOR or SVE256 elsewhere; `ATEN_CPU_CAPABILITY=AVX2` is ignored); oneDNN upper-cases what it reads.
ATEN_BY_MACHINE = {
    "x86_64": {"avx2", "avx512"},
    "AMD64": {"avx2", "avx512"},
    "aarch64": {"sve256"},
    "arm64": {"sve256"},
}
ATEN_BY_MACHINE |= {"ppc64le": {"vsx"}, "s390x": {"zvector"}}
ATEN_VALUES = {"default"} | ATEN_BY_MACHINE.get(platform.machine(), set())
ONEDNN_VALUES = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
ONEDNN_VALUES |= {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "DEFAULT", "ALL"}
# oneDNN's caps at or above which a CPU without AVX-512 runs its widest (AVX2) kernels anyway
AVX2_OR_WIDER = ONEDNN_VALUES - {"SSE41", "AVX"}


def check_environment(environ: dict[str, str] | None = None) -> None:
    "Refuse an `ATEN_CPU_CAPABILITY` or `ONEDNN_MAX_CPU_ISA` that its library would ignore, by name and value."
    environ = os.environ if environ is None else environ
    for key, values, norm in (
        ("ATEN_CPU_CAPABILITY", ATEN_VALUES, str),
        ("ONEDNN_MAX_CPU_ISA", ONEDNN_VALUES, str.upper),
    ):
        if key in environ and norm(environ[key]) not in values:
            raise SystemExit(f"{key}={environ[key]!r} is no value its library reads (expected one of {sorted(values)})")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    "The flags of the first CPU in `cpuinfo` (empty where there is none: then no path is taken as native)."
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def aten_capability(environ: dict[str, str]) -> str:
    "The kernels ATen dispatches to in a fresh Python started with `environ` (e.g. 'AVX2', 'AVX512', 'DEFAULT')."
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True).stdout.strip()


def onednn_same_as_native(isa: str | None, flags: set[str]) -> bool:
    "Whether oneDNN capped at `isa` (None: not capped) runs the kernels it would run uncapped on a CPU with `flags`."
    if isa is None:
        return True
    return "avx2" in flags and "avx512f" not in flags and isa.upper() in AVX2_OR_WIDER


def same_as_native(environ: dict[str, str] | None = None, flags: set[str] | None = None) -> bool:
    "Whether the path `environ` emulates is the machine's own one (both ATen's kernels and oneDNN's)."
    environ = dict(os.environ if environ is None else environ)
    flags = cpu_flags() if flags is None else flags
    native = {k: v for k, v in environ.items() if k not in EMULATING}
    if not flags or not onednn_same_as_native(environ.get("ONEDNN_MAX_CPU_ISA"), flags):
        return False
    return "ATEN_CPU_CAPABILITY" not in environ or aten_capability(environ) == aten_capability(native)


def probe_line() -> str:
    "The 512³ matmul probe on one and two threads, and ATen's kernels."
    import torch

    from ris_nb.machine import probe_ms

    one, two = probe_ms(threads=1), probe_ms(threads=2)
    return f"512³ matmul {one:.2f} ms on one thread, {two:.2f} on two; {torch.backends.cpu.get_cpu_capability()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["probe", "same-as-native"])
    args = ap.parse_args(argv)
    check_environment()
    if args.what == "probe":
        print(probe_line())
        return 0
    return 0 if same_as_native() else 1


if __name__ == "__main__":
    sys.exit(main())
