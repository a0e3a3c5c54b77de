from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = Path(os.environ.get("QOSFLOW_ARTIFACT",
                               REPO.parent / "shared" / "qosflow-artifact")).resolve()


@pytest.fixture(scope="session")
def artifact() -> Path:
    """The published QoSFlow artifact. Missing data is an error, never a skip."""
    needed = ["1kgenome/1kg_script_order.json", "1kgenome/1kg_filtered_spm_results.csv",
              "1kgenome/workflow_makespan_stageorder.csv",
              "1kgenome/sens_out/regret_per_config.csv",
              "1kgenome/sens_out/1kgenome_policy_pc_scale10.csv",
              "1kgenome/1kg_workflow_data.csv",
              "storage-profile/updated_master_ior_df.csv"]
    missing = [n for n in needed if not (ARTIFACT / n).is_file()]
    if missing:
        pytest.fail(f"QoSFlow artifact not found at {ARTIFACT} (missing {missing[0]}); "
                    "check out ../shared beside the repository or set QOSFLOW_ARTIFACT")
    return ARTIFACT
