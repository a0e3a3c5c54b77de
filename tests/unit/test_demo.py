"""The README's first command, end to end: profile, example workflow, train, query."""

from __future__ import annotations

from qos_plugin.cli.demo import run_demo
from qos_plugin.examples.genome import GenomeShape, io_data, template_dict
from qos_plugin.model.iodata import stage_volumes
from qos_plugin.model.template import template_from_dict
from qos_plugin.planner.registry import Registry


def test_genome_example_follows_the_published_structure():
    shape = GenomeShape(chromosomes=3, individuals_per_chromosome=4)
    t = template_from_dict(template_dict(shape), name="g")
    tasks = {s.name: s.num_tasks for s in t.stages}
    assert tasks == {"individuals": 12, "sifting": 3, "individuals_merge": 3,
                     "mutation_overlap": 21, "frequency": 21}
    assert {s.name: s.level for s in t.stages}["frequency"] == 3
    vol = stage_volumes(io_data(shape), t.stage_names)
    # Each individuals task reads its chromosome's whole VCF (1.0-2.5 GB in the traces).
    per_task = vol["individuals"]["read_mib"] / 12
    assert 1_014_213_207 / 2**20 < per_task < 2_540_066_220 / 2**20 + 1
    # The merge reads exactly what individuals wrote.
    assert abs(vol["individuals_merge"]["read_mib"] - vol["individuals"]["write_mib"]) < 1e-9


def test_demo_runs_the_whole_product(tmp_path, capsys):
    assert run_demo(tmp_path / "out", shm=tmp_path) == 0
    out = capsys.readouterr().out
    model = Registry(tmp_path / "out" / "registry").load("1000genome")
    assert model.tier_names == ["disk", "tmpfs"] and model.node_counts == [2, 5, 10]
    assert out.count("$ qos-plan query") == 4 and "infeasible" in out
    assert (tmp_path / "out" / "regions" / "regions.png").stat().st_size > 10_000
