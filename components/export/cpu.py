"""Reads /proc/cpuinfo: the build machine's CPU model and the instruction-set flags that decide which kernels
TFLite runs.

The export report records them beside its timings, because a variant's speed is a fact about the model
*and* the CPU: on CPUs with AMX-INT8 (Sapphire, Emerald and Granite Rapids Xeons) XNNPACK runs every
int8 convolution on a 16x64 tile kernel that is several times slower than float32 for convolutions with
few channels (issue 18), while the same file is faster than float32 on a CPU with only AVX512-VNNI.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# x86 extensions XNNPACK chooses its float, int8 and bf16/fp16 kernels by (src/configs/*-config.c).
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "avx512_bf16",
    "avx512_fp16",
)


def parse_cpuinfo(text: str) -> dict:
    """{model, vendor, family, model_number, flags: {flag: present}} of the first processor in /proc/cpuinfo text.

    Every processor of a machine has the same model and flags; ARM kernels list `Features` instead of
    `flags` and often no `model name`, which then comes from the platform module.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:  # the end of the first processor's block
                break
            continue
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine() or "unknown",
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model_number": fields.get("model"),
        "flags": {flag: flag in present for flag in RELEVANT_FLAGS},
    }


def describe_cpu(cpuinfo: Path = CPUINFO) -> dict:
    """parse_cpuinfo of this machine plus its logical CPU count; without /proc/cpuinfo (macOS) the flags are unknown
    (empty)."""
    if cpuinfo.is_file():
        description = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    else:
        description = {
            "model": platform.processor() or platform.machine() or "unknown",
            "vendor": None,
            "family": None,
            "model_number": None,
            "flags": {},
        }
    return {**description, "logical_cpus": os.cpu_count()}


def format_cpu(description: dict) -> str:
    """'Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207), 2 logical CPUs; has avx2, ...; lacks ...'"""
    identity = " ".join(
        f"{label} {value}"
        for label, value in (("family", description.get("family")), ("model", description.get("model_number")))
        if value
    )
    identity = " ".join(part for part in (description.get("vendor"), identity) if part)
    text = description["model"] + (f" ({identity})" if identity else "")
    if description.get("logical_cpus"):
        text += f", {description['logical_cpus']} logical CPUs"
    flags = description.get("flags") or {}
    if not flags:
        return text + "; instruction-set flags unknown (no /proc/cpuinfo)"
    has = [flag for flag, present in flags.items() if present]
    lacks = [flag for flag, present in flags.items() if not present]
    return (
        text
        + f"; has {', '.join(has) or 'none of ' + ', '.join(RELEVANT_FLAGS)}"
        + (f"; lacks {', '.join(lacks)}" if lacks and has else "")
    )
