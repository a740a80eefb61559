"""The gateway-workers benchmark sends each association a study of its own."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom

from bench.dimse_workers import studies_dealt, study_shares
from bench.stow import Files


def test_each_share_is_one_study_of_one_series_and_no_two_shares_share_a_study(tmp_path: Path) -> None:
    files = Files(8, 16, seed=3)
    shares = study_shares(files, tmp_path, 4, random.Random(3))
    datasets = [[pydicom.dcmread(path) for path in share] for share in shares]
    studies = [{str(ds.StudyInstanceUID) for ds in share} for share in datasets]
    series = [{str(ds.SeriesInstanceUID) for ds in share} for share in datasets]
    sops = [str(ds.SOPInstanceUID) for share in datasets for ds in share]
    assert [len(share) for share in shares] == [2, 2, 2, 2]
    assert all(len(uids) == 1 for uids in studies + series)
    assert len(set.union(*studies)) == 4 and len(set.union(*series)) == 4
    assert len(set(sops)) == 8


def test_the_dealt_instances_give_association_i_every_instance_of_study_i() -> None:
    instances = studies_dealt(3, 2)
    studies = [str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID) for data in instances]
    shares = [studies[index::3] for index in range(3)]  # what bench.dimse.c_store sends over association i
    assert all(len(set(share)) == 1 for share in shares)
    assert len({share[0] for share in shares}) == 3
