"""The fixed subject splits of ``shared/data/README.md``, in this one place.

Slice models on T1 (BRUNO, slice VAE) use the 50-subject healthy corpus from three sources
(``t1_train`` / ``t1_val`` / ``t1_test``); the FLAIR anomaly models and the brain extraction
use the NiChart subjects (``nichart_*``); the other keys are evaluation-only sets.
"""

from __future__ import annotations

NICHART_TRAIN = [f"Subj{i}" for i in range(1, 18)]
NICHART_VAL = [f"Subj{i}" for i in range(18, 21)]
NICHART_TEST = [f"Subj{i}" for i in range(21, 24)]

OASIS_ALL = [
    "OAS1000", "OAS1001", "OAS1002", "OAS1003", "OAS1004", "OAS1005", "OAS1006", "OAS1007",
    "OAS1008", "OAS1009", "OAS1010", "OAS1011", "OAS1012", "OAS1013", "OAS1014", "OAS1015",
    "OAS1017", "OAS1018", "OAS1019", "OAS1036", "OAS1101", "OAS1104", "OAS1107", "OAS1110",
    "OAS1113", "OAS1116", "OAS1119", "OAS1122", "OAS1125", "OAS1128",
]
OASIS_VAL = ["OAS1006", "OAS1017", "OAS1107", "OAS1119"]
OASIS_TEST = ["OAS1003", "OAS1012", "OAS1113", "OAS1125"]
OASIS_TRAIN = [s for s in OASIS_ALL if s not in OASIS_VAL + OASIS_TEST]

IXI_BRAIN_ALL = [
    "IXI057-HH-1342", "IXI237-Guys-1049", "IXI259-HH-1804", "IXI279-Guys-1044", "IXI296-HH-1970",
    "IXI329-HH-1908", "IXI363-HH-2050", "IXI381-Guys-1024", "IXI390-Guys-0931", "IXI401-Guys-0978",
    "IXI418-Guys-0956", "IXI429-Guys-0997", "IXI497-Guys-1002", "IXI552-Guys-1063", "IXI568-HH-2607",
]
IXI_VAL = ["IXI237-Guys-1049", "IXI329-HH-1908"]
IXI_TEST = ["IXI057-HH-1342", "IXI390-Guys-0931"]
IXI_TRAIN = [s for s in IXI_BRAIN_ALL if s not in IXI_VAL + IXI_TEST]
IXI_HEAD = ["IXI012-HH-1211", "IXI015-HH-1258"]
"""``ixi/t1``: T1 with skull from another site, the out-of-distribution test."""

SPLITS: dict[str, list[str]] = {
    "t1_train": NICHART_TRAIN + OASIS_TRAIN + IXI_TRAIN,
    "t1_val": NICHART_VAL + OASIS_VAL + IXI_VAL,
    "t1_test": NICHART_TEST + OASIS_TEST + IXI_TEST,
    "nichart_train": NICHART_TRAIN,
    "nichart_val": NICHART_VAL,
    "nichart_test": NICHART_TEST,
    "ixi_head": IXI_HEAD,
    "open_ms": ["patient07", "patient19", "patient26"],
    "cbica_wml": [
        "301D00252-20040121", "301D00262-20040114", "301D00293-20040211", "301D00368-20040329",
        "301D00373-20040319", "301D00377-20040311", "302D10226-20040128", "302D10245-20040126",
        "302D10347-20040406", "303D20103-20040204",
    ],
    "brats2018": ["CBICA_AAB_1", "CBICA_AQN_1", "CBICA_ASA_1", "CBICA_ATV_1", "TCIA04_192_1"],
}
"""Fixed splits. ``t1_*``: 50 / 18 / 18 healthy T1 (NiChart 17/3/3, OASIS 22/4/4, IXI 11/2/2);
``nichart_*``: Subj1-17 / 18-20 / 21-23 (FLAIR anomaly models, brain extraction, slice VAE);
``ixi_head``: the out-of-distribution T1 with skull; ``open_ms`` (patient07 is the shipped
sample), ``cbica_wml`` and ``brats2018``: the manual-label evaluation sets."""

SHIPPED_SAMPLE = "patient07"

FLAIR_MISREGISTERED: tuple[str, ...] = ("Subj15", "Subj20", "Subj23")
"""NiChart subjects whose FLAIR is not aligned with the T1 parcellation in world space (the
parcellation resampled onto the FLAIR grid is shifted by several slices: found by the brain
extraction's Dice on the FLAIR, 0.63-0.71 vs 0.73-0.96 elsewhere, and checked by eye).
Their FLAIR brain mask is the learned brain extraction instead, and the brain-extraction
training leaves their FLAIR out."""


def misregistered(subject: str, modality: str) -> bool:
    """Whether ``subject``'s ``modality`` volume is not aligned with its T1 parcellation."""
    return modality == "flair" and subject in FLAIR_MISREGISTERED


def source_of(subject: str) -> str:
    """The data source a subject comes from: NiChart, OASIS, IXI, IXI (with skull), open_ms,
    cbica_wml or brats2018."""
    if subject.startswith("Subj"):
        return "NiChart"
    if subject.startswith("OAS"):
        return "OASIS"
    if subject in IXI_HEAD:
        return "IXI (with skull)"
    if subject.startswith("IXI"):
        return "IXI"
    for name in ("open_ms", "cbica_wml", "brats2018"):
        if subject in SPLITS[name]:
            return name
    raise ValueError(f"unknown subject {subject!r}")


def by_source(subjects: list[str]) -> dict[str, list[str]]:
    """``subjects`` grouped by :func:`source_of`, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for subject in subjects:
        groups.setdefault(source_of(subject), []).append(subject)
    return groups
