"""Tests for components/export/cpu.py: the build machine's CPU model and instruction-set flags from /proc/cpuinfo."""

from __future__ import annotations

from components.export import cpu

EMERALD_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx_vnni avx512_bf16 avx512_vnni amx_bf16 \
avx512_fp16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Another CPU that must not be read
flags\t\t: fpu
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9554 64-Core Processor
flags\t\t: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp
CPU implementer\t: 0x41
"""


def test_the_first_processor_gives_the_model_and_every_relevant_flag():
    described = cpu.parse_cpuinfo(EMERALD_RAPIDS)
    assert described["model"] == "Intel(R) Xeon(R) Processor"
    assert (described["vendor"], described["family"], described["model_number"]) == ("GenuineIntel", "6", "207")
    assert set(described["flags"]) == set(cpu.RELEVANT_FLAGS) and all(described["flags"].values())


def test_flags_a_cpu_lacks_are_false_not_missing():
    flags = cpu.parse_cpuinfo(EPYC)["flags"]
    assert flags["avx512_vnni"] and flags["avx2"] and flags["avx512_bf16"]
    assert not flags["amx_int8"] and not flags["amx_tile"] and not flags["avx_vnni"] and not flags["avx512_fp16"]
    assert cpu.parse_cpuinfo(EPYC)["model"] == "AMD EPYC 9554 64-Core Processor"


def test_an_arm_cpuinfo_without_model_name_or_x86_flags_still_describes_the_cpu():
    described = cpu.parse_cpuinfo(ARM)
    assert described["model"] and not any(described["flags"].values())
    assert cpu.parse_cpuinfo("")["flags"] == dict.fromkeys(cpu.RELEVANT_FLAGS, False)


def test_the_one_line_description_names_present_and_absent_flags():
    text = cpu.format_cpu({**cpu.parse_cpuinfo(EPYC), "logical_cpus": 8})
    assert text.startswith(
        "AMD EPYC 9554 64-Core Processor (AuthenticAMD family 25 model 17), 8 logical CPUs; has avx2, avx512f"
    )
    assert "lacks avx_vnni, amx_tile, amx_int8" in text
    assert "flags unknown" in cpu.format_cpu({"model": "arm64", "flags": {}})


def test_this_machine_is_described(tmp_path):
    described = cpu.describe_cpu()
    assert described["model"] and described["logical_cpus"] >= 1
    assert cpu.describe_cpu(tmp_path / "no-cpuinfo")["flags"] == {}
