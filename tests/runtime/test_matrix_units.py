"""The bfloat16 probe: flags read from /proc/cpuinfo text, the rule on measured figures (never the
CPU's name), and one probe per CPU/jaxlib cached without half-written files."""

import json

from jaxmed.runtime import matrix_units

CPUINFO = """processor\t: 0
model name\t: Some Xeon
flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Some Xeon
flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_flags_and_model_come_from_cpuinfo():
  cpu = matrix_units.cpu_description(CPUINFO)
  assert cpu == {"model": "Some Xeon", "matrix_flags": ["amx_bf16", "amx_tile", "avx512_bf16"]}
  assert matrix_units.cpu_description("") == {"model": "", "matrix_flags": []}


def test_bfloat16_pays_only_with_a_matrix_unit_and_a_measured_speedup():
  amx = {"matrix_flags": ["amx_bf16", "amx_tile"], "float32_gflops": 300.0}
  assert matrix_units.bfloat16_pays(dict(amx, bfloat16_accumulate_float32_gflops=1600.0))
  assert not matrix_units.bfloat16_pays(dict(amx, bfloat16_accumulate_float32_gflops=500.0))
  no_unit = {"matrix_flags": ["avx512_bf16"], "float32_gflops": 300.0,
             "bfloat16_accumulate_float32_gflops": 1600.0}
  assert not matrix_units.bfloat16_pays(no_unit)  # a fast figure without AMX: a timing fluke


def test_probe_measures_once_and_caches(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path))
  calls = []
  real = matrix_units._time_products
  monkeypatch.setattr(matrix_units, "_time_products",
                      lambda: calls.append(1) or real(side=256, repeats=2))
  first = matrix_units.probe()
  second = matrix_units.probe()
  assert calls == [1] and not first["cached"] and second["cached"]
  assert {k: v for k, v in first.items() if k != "cached"} == \
      {k: v for k, v in second.items() if k != "cached"}
  assert first["float32_gflops"] > 0 and first["bfloat16_gflops"] > 0
  assert first["bfloat16_pays"] == matrix_units.bfloat16_pays(first)
  files = list((tmp_path / "matrix_units").iterdir())
  assert len(files) == 1 and files[0].suffix == ".json"  # no temporary file left behind
  files[0].write_text("{not json")  # a damaged entry is measured again, not trusted
  assert not matrix_units.probe()["cached"] and json.loads(files[0].read_text())
