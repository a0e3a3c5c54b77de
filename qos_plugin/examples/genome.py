"""The 1000 Genomes workflow, built from published facts.

Structure (the Pegasus 1000Genome workflow): per chromosome, ``individuals``
tasks each read the chromosome's VCF and the column list and write a small
archive; one ``individuals_merge`` merges them; one ``sifting`` reads the
chromosome's annotation VCF. Per chromosome and population (AFR, AMR, EAS, EUR,
GBR, SAS, ALL) one ``mutation_overlap`` and one ``frequency`` read the merged
archive, the sifted list and the population file.

File sizes (bytes, min-max over the public traces) are those WfCommons 1.6
records for its genome recipe (task_type_stats.json of wfchef/recipes/genome);
chromosome c of C gets sizes spread evenly from the largest to the smallest.
Transfer sizes are assumptions: 8 KiB for line-oriented text reads, up to
64 KiB for writes. Levels follow the DAG (longest path).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qos_plugin.model.iodata import IoData, IoRecord
from qos_plugin.model.template import INITIAL_DATA

POPULATIONS = ("AFR", "AMR", "EAS", "EUR", "GBR", "SAS", "ALL")
# (min, max) bytes from the traces.
CHROMOSOME_VCF = (1_014_213_207, 2_540_066_220)
ANNOTATION_VCF = (267_806_263, 1_708_156_254)
COLUMNS_TXT = 20_078
INDIVIDUALS_GZ = (27_275, 29_311)
MERGED_GZ = (24_180, 27_336)
SIFTED_TXT = (231_958, 2_126_612)
POPULATION_FILE = 8_088
OVERLAP_GZ = (136_896, 172_605)
FREQUENCY_GZ = (217_409, 298_487)
TEXT_READ = 8192
WRITE_BLOCK = 65536
MIB = float(1 << 20)


@dataclass(frozen=True)
class GenomeShape:
    chromosomes: int = 10
    individuals_per_chromosome: int = 30


def _spread(bounds: tuple[int, int], c: int, n: int) -> int:
    lo, hi = bounds
    return hi if n == 1 else round(hi - (hi - lo) * c / (n - 1))


def template_dict(shape: GenomeShape = GenomeShape()) -> dict[str, Any]:
    """The DAG template in the QoSFlow JSON format."""
    c = shape.chromosomes
    per_pop = c * len(POPULATIONS)
    shared_inputs = {"individuals_merge": {"inputs": [r"chr\d+n\.tar\.gz"]},
                     "sifting": {"inputs": [r"sifted\.SIFT\.chr\d+\.txt"]},
                     INITIAL_DATA: {"inputs": [r"(AFR|AMR|EAS|EUR|GBR|SAS|ALL)"]}}
    return {
        "individuals": {"stage_order": 1, "num_tasks": c * shape.individuals_per_chromosome,
                        "parallelism": c * shape.individuals_per_chromosome,
                        "predecessors": {INITIAL_DATA: {"inputs": [r"ALL\.chr\d+\.250000\.vcf",
                                                                   r"columns\.txt"]}},
                        "outputs": [r"chr\d+n-\d+-\d+\.tar\.gz"]},
        "sifting": {"stage_order": 1, "num_tasks": c, "parallelism": c,
                    "predecessors": {INITIAL_DATA: {"inputs": [
                        r"ALL\.chr\d+\.phase3_shapeit2_mvncall_integrated_v5\.20130502\.sites"
                        r"\.annotation\.vcf"]}},
                    "outputs": [r"sifted\.SIFT\.chr\d+\.txt"]},
        "individuals_merge": {"stage_order": 2, "num_tasks": c, "parallelism": c,
                              "predecessors": {"individuals": {"inputs": [
                                  r"chr\d+n-\d+-\d+\.tar\.gz"]}},
                              "outputs": [r"chr\d+n\.tar\.gz"]},
        "mutation_overlap": {"stage_order": 3, "num_tasks": per_pop, "parallelism": per_pop,
                             "predecessors": shared_inputs,
                             "outputs": [r"chr\d+-[A-Z]+\.tar\.gz"]},
        "frequency": {"stage_order": 3, "num_tasks": per_pop, "parallelism": per_pop,
                      "predecessors": shared_inputs,
                      "outputs": [r"chr\d+-[A-Z]+-freq\.tar\.gz"]},
    }


def _records(shape: GenomeShape) -> Iterator[IoRecord]:
    C, per = shape.chromosomes, shape.individuals_per_chromosome

    def task(stage: str, task_id: str, reads: list[tuple[str, int, str]],
             writes: list[tuple[str, int]]) -> Iterator[IoRecord]:
        # One row per (task, file, operation) with that file's size.
        for name, size, source in reads:
            yield IoRecord(stage, task_id, name, "read", float(TEXT_READ), size / MIB, source)
        for name, size in writes:
            yield IoRecord(stage, task_id, name, "write", float(min(size, WRITE_BLOCK)),
                           size / MIB, "")

    for c in range(C):
        chrom = c + 1
        vcf = (f"ALL.chr{chrom}.250000.vcf", _spread(CHROMOSOME_VCF, c, C), INITIAL_DATA)
        cols = ("columns.txt", COLUMNS_TXT, INITIAL_DATA)
        outs = []
        for i in range(per):
            out = (f"chr{chrom}n-{i + 1}-{i + 2}.tar.gz", _spread(INDIVIDUALS_GZ, i, per))
            outs.append(out)
            yield from task("individuals", f"ind-{chrom}-{i}", [vcf, cols], [out])
        merged = (f"chr{chrom}n.tar.gz", _spread(MERGED_GZ, c, C))
        yield from task("individuals_merge", f"merge-{chrom}",
                        [(n, s, "individuals") for n, s in outs], [merged])
        sifted = (f"sifted.SIFT.chr{chrom}.txt", _spread(SIFTED_TXT, c, C))
        annotation = (f"ALL.chr{chrom}.phase3_shapeit2_mvncall_integrated_v5.20130502.sites."
                      "annotation.vcf", _spread(ANNOTATION_VCF, c, C), INITIAL_DATA)
        yield from task("sifting", f"sift-{chrom}", [annotation], [sifted])
        for p in POPULATIONS:
            inputs = [(merged[0], merged[1], "individuals_merge"),
                      (sifted[0], sifted[1], "sifting"), (p, POPULATION_FILE, INITIAL_DATA)]
            yield from task("mutation_overlap", f"mut-{chrom}-{p}", inputs,
                            [(f"chr{chrom}-{p}.tar.gz", _spread(OVERLAP_GZ, c, C))])
            yield from task("frequency", f"freq-{chrom}-{p}", inputs,
                            [(f"chr{chrom}-{p}-freq.tar.gz", _spread(FREQUENCY_GZ, c, C))])


def io_data(shape: GenomeShape = GenomeShape()) -> IoData:
    return IoData(list(_records(shape)), source="1000 Genomes example (WfCommons facts)")

