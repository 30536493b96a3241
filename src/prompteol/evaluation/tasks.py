"""Declarative definitions of the SentEval tasks: files, checksums, parts, scores, aggregation.

Nothing here reads data; :mod:`prompteol.evaluation.data` does, and
:mod:`prompteol.evaluation.runner` scores. A task is plain data:

- ``files``: each file of the SentEval layout (relative to the data root, the folder that
  holds ``downstream/``) with the number of records SentEval's reader yields from it and its
  sha256, copied from the data MANIFEST (the metadata is ours to ship, the data is not);
- ``parts``: named pieces (STS subsets, or train/dev/test splits, or the two label files);
- ``main_score`` and ``aggregation``: what the headline number is and how parts combine.

Aggregations: ``all`` = Spearman over the concatenation of every subset (the headline of
STS12-16 in SimCSE/PromptBERT/PromptEOL), also reported with SentEval's ``mean`` and
``wmean`` (weighted by pairs); ``single`` = one split; ``inner-kfold``, ``split`` and
``kfold`` are SentEval's three classifier protocols (see docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = [
    "DataFile",
    "Part",
    "Task",
    "MANIFEST",
    "TASKS",
    "TASK_GROUPS",
    "STS_SPLITS",
    "MODES",
    "get_task",
    "resolve_tasks",
]

#: ``mode`` -> number of folds (outer and inner) of the transfer protocols, as in SentEval's
#: ``test`` (10) and ``fast`` (5) settings; STS tasks do not depend on the mode.
MODES = {"test": 10, "fast": 5}


@dataclass(frozen=True)
class DataFile:
    """One data file. ``rows`` = records the SentEval reader yields (scored pairs for ``STS.gs``)."""

    path: str
    rows: int
    sha256: str


# path under downstream/ -> (rows, sha256); from the data MANIFEST (SimCSE's senteval.tar contents)
_MANIFEST_ROWS: dict[str, tuple[int, str]] = {
    "STS/STS12-en-test/STS.input.MSRpar.txt": (750, "21c0c6cc32f68f69d672dfae0f86935cdc2627bae4941381692941aa9320f8c4"),
    "STS/STS12-en-test/STS.gs.MSRpar.txt": (750, "5526be59228bc34ccb3cb6f1f56c0d7278d3419b8886713ae016fd92b151f19c"),
    "STS/STS12-en-test/STS.input.MSRvid.txt": (750, "c4a92a3645744f77d1cda9f2af7da5d11e807ae296f6a20fe5930403fb9c4dfe"),
    "STS/STS12-en-test/STS.gs.MSRvid.txt": (750, "9c6096c6bcfb0144c8bbddb00900ca9198c88498630cd0c8f08d18365f1d7150"),
    "STS/STS12-en-test/STS.input.SMTeuroparl.txt": (459, "05acf33c0fcb592347f49e279137a17e0244d7b0d37cc113134320a5d3f586e1"),
    "STS/STS12-en-test/STS.gs.SMTeuroparl.txt": (459, "708530c4d006d06881f3289fce35d624d7efe562dcf0fe5f8aa0eec3a135f6d4"),
    "STS/STS12-en-test/STS.input.surprise.OnWN.txt": (750, "e605c67de4b7cee2c5629239d209e2845920f475ebd0468bdcf03d8da2ffa9cf"),
    "STS/STS12-en-test/STS.gs.surprise.OnWN.txt": (750, "088d8ca22c0aa406e4a5d2e6e308a4f38b482b8e736c2445a38ffb6e4c4fb4fd"),
    "STS/STS12-en-test/STS.input.surprise.SMTnews.txt": (399, "cc4a0b9a1355c5680a8a37c02f2d08e35f95754b9f89a2a4a05088ee5ff57ffe"),
    "STS/STS12-en-test/STS.gs.surprise.SMTnews.txt": (399, "aa6dfc868db333c43dc59be14d46fa6587c7ebddc0d497e717f647bf35121cf1"),
    "STS/STS13-en-test/STS.input.FNWN.txt": (189, "a20cb41a33a528f3c089c94ef24da8eb5e26ed594937cf6fa90f3d1c79d6c53c"),
    "STS/STS13-en-test/STS.gs.FNWN.txt": (189, "8ca95b7228119578e2007839cf7969f22c4f1fd41fd610c4b7f9683072d98066"),
    "STS/STS13-en-test/STS.input.headlines.txt": (750, "637f3b4afdc8d1cc789e91a4d7217efff30e503c34a872d93e8b27e7b1136cb7"),
    "STS/STS13-en-test/STS.gs.headlines.txt": (750, "f49f64089011436dd296ef384c07160219406feef7dc4b9fa2af52a519f32bc6"),
    "STS/STS13-en-test/STS.input.OnWN.txt": (561, "cb74993eef23cfa2c03da7e5a08c62e50c9baafae0fa9ba0bb5a09d8e7d2be65"),
    "STS/STS13-en-test/STS.gs.OnWN.txt": (561, "0cd497aaddb00a2fb6db25f77bccfc09e8aa012e11549b81b434bab1a27ad954"),
    "STS/STS14-en-test/STS.input.deft-forum.txt": (450, "b39579e59c7b9f4063545c3d4643f8db16dc060cd0a35447ef56ff0aabec9d83"),
    "STS/STS14-en-test/STS.gs.deft-forum.txt": (450, "ba6dc76696b5c93985590a325b4d142449932cdf0d715b2bab1b1743fe3c488c"),
    "STS/STS14-en-test/STS.input.deft-news.txt": (300, "cc450dcd9228211c1a311de1ff28199f166dce6f7fc81dcb5ce968a3a8a80d2d"),
    "STS/STS14-en-test/STS.gs.deft-news.txt": (300, "105c5b333abd50c274efb4dae9e3e0dab36ed63eee780cfb49955b1586bd62f2"),
    "STS/STS14-en-test/STS.input.headlines.txt": (750, "2ed0ea55d196cdbb440ed428eb1846dcb43486a692aafb22b3bc5c14c44407c8"),
    "STS/STS14-en-test/STS.gs.headlines.txt": (750, "f243c34647255cd0b994565ed4f58dd31506e7d9c9d6250d1a6dd14095625832"),
    "STS/STS14-en-test/STS.input.images.txt": (750, "295fc99f8a9215c330b36a08bc1ff3e428f10057be5bb915262111494b3616e2"),
    "STS/STS14-en-test/STS.gs.images.txt": (750, "fc994ebacc7074c332626fa9e29542d7340a48a3cdb999b47cdb59c378523a62"),
    "STS/STS14-en-test/STS.input.OnWN.txt": (750, "8cd2333328d17e3212afa2d43dd934c5521e3fd35fc786b992dc7864f9d34f8f"),
    "STS/STS14-en-test/STS.gs.OnWN.txt": (750, "1c80147df270ea4cfce14a47ed29f8a2f10d5dc016d02836077fd786ff7f535b"),
    "STS/STS14-en-test/STS.input.tweet-news.txt": (750, "b25b3768762aa7cdcd89f2a25ce5049de7e4cd51b138227c3a31092ae8e2b5f5"),
    "STS/STS14-en-test/STS.gs.tweet-news.txt": (750, "0098c644bfeaa2d511a8297b1940771865900c372c9dd49a62726dc5ec02c9a3"),
    "STS/STS15-en-test/STS.input.answers-forums.txt": (2000, "b8f1bc125559adbb3ac5b33206472b217c12621c3a6b5a8575da47dc0b536fc4"),
    "STS/STS15-en-test/STS.gs.answers-forums.txt": (375, "1644301a7540e5484da285002e9269062852efb2272be614cad99c9530f6a102"),
    "STS/STS15-en-test/STS.input.answers-students.txt": (1500, "4893f736e84cea176c39c882250f6513d5bbcfa6ebe8d3ffabcef6056d0471a7"),
    "STS/STS15-en-test/STS.gs.answers-students.txt": (750, "028db213140f8c7aef7497c4ae38b6380938f20359852231669c83dce11c3701"),
    "STS/STS15-en-test/STS.input.belief.txt": (2000, "a54ec7af1924c900d8474586abae465819d2c03c73561aa2e76e7fa5e836faff"),
    "STS/STS15-en-test/STS.gs.belief.txt": (375, "5736192faaccbdbecd0ef6b73ec04b24115cd2e48d55dc3b1b170da3d2a81c75"),
    "STS/STS15-en-test/STS.input.headlines.txt": (1500, "85d90b0f8f258a47758808d382188ba2ee7b1adbbf84feb776afad0e4691d5d1"),
    "STS/STS15-en-test/STS.gs.headlines.txt": (750, "e8e432f769c8a94ddb62ae3343890ac24a9dd78a116d56c707313bc59413dd56"),
    "STS/STS15-en-test/STS.input.images.txt": (1500, "0dac9494186838a8f4dfbb4ee290fec8d7581cf84a33d615c522700b3b50e0d6"),
    "STS/STS15-en-test/STS.gs.images.txt": (750, "ed8878209098c77ca7f02ac413d3fd698f92ad3425999555e50fda89fc46012a"),
    "STS/STS16-en-test/STS.input.answer-answer.txt": (1572, "ebbffced7d4630755e61d4dfe4d82121198965a14b9f5734b5abedb961f0725c"),
    "STS/STS16-en-test/STS.gs.answer-answer.txt": (254, "332efd741b0cb247d20dd2a6cec854360c921c7e6b395f328f562d8d26057214"),
    "STS/STS16-en-test/STS.input.headlines.txt": (1498, "705c3e82fb85fa3b6706a481b790e1030304ddc9c72d39e126693ed44b258ba6"),
    "STS/STS16-en-test/STS.gs.headlines.txt": (249, "01e33a95996201a6e81e3cce9eda0f15048b77613ea64dce2929bb35479f7d85"),
    "STS/STS16-en-test/STS.input.plagiarism.txt": (1271, "dd4ca54d1dfcd7d1cabe67f0de98cde23f4c1696ecc0003afbecae1274305d63"),
    "STS/STS16-en-test/STS.gs.plagiarism.txt": (230, "29984944a91aaff484f2b2e5d4d434fc8a6f5ef6f578a880cccd2786f5142fdc"),
    "STS/STS16-en-test/STS.input.postediting.txt": (3287, "9b455d8da1d1bae692d038da1d431827d23bfec04c64b109efc3b6b620fd422f"),
    "STS/STS16-en-test/STS.gs.postediting.txt": (244, "81947ed9dbe7f85b7bd249df68ed5c7b2f16f06390ad568eb5554b1e26bc5577"),
    "STS/STS16-en-test/STS.input.question-question.txt": (1555, "58920c7da7dbc1b860609310782d88b7457d599c90a226819b5880262dd7f58a"),
    "STS/STS16-en-test/STS.gs.question-question.txt": (209, "cf9ebf9d140191f73620cda0560947ad9283c910735d0d541b8a401a5e64afb0"),
    "STS/STSBenchmark/sts-train.csv": (5749, "4fc4924edd059a43e9c7c8927a72cb8061a87ef98afdf2026a0e0b540b458693"),
    "STS/STSBenchmark/sts-dev.csv": (1500, "c558fa95fec006608f13e3d942f153b614beabccbf33e64f36418d406a895e37"),
    "STS/STSBenchmark/sts-test.csv": (1379, "22ef3e10603b6655d7c7978c8eee26e7d5291dd5a71c5531b934fb025c108cbf"),
    "SICK/SICK_train.txt": (4500, "e02bd30f17ab87358f80ef079a6ef797acd244c3c7515de454301c7c257e410c"),
    "SICK/SICK_trial.txt": (500, "0d0786bd8671a0a70614f2f890b8ab24b3c24d1ccb624bcca87618091fbe4f11"),
    "SICK/SICK_test_annotated.txt": (4927, "d0362afe8304c8d08166b82d76da2a8c665d5b635ac1f3f1ee82054511749f97"),
    "MR/rt-polarity.pos": (5331, "34e5b0da2d491e46b700b00afe735aaae0962bcfe4f7f22b2d8077e714fa370f"),
    "MR/rt-polarity.neg": (5331, "c4ac36eaa8adc8ee31c31f69594bfbe68d83ef5b6db53f1f19b28c0be52f3999"),
    "CR/custrev.pos": (2407, "91a20a4ffeb5d38a39a4087bb247e16538aff21e7d621ae59738379f39f21732"),
    "CR/custrev.neg": (1368, "ec94532766f6f962094841ab3bee2ad6f232f996c3756825a91e78bcc294750f"),
    "SUBJ/subj.subjective": (5000, "274c2ffe59c204dc4df779848561786f59a98cc20dda3cfdd7d9f76a4f730710"),
    "SUBJ/subj.objective": (5000, "d8ccd43f1674f1c17e4ab717564e3561cfb719b0db4cfb19e5677427c68ff8a1"),
    "MPQA/mpqa.pos": (3312, "7487dbb74c77383e60b292845495163a9e21fb70a4fdacdda933413e43163f0d"),
    "MPQA/mpqa.neg": (7294, "8da6e035fa4cea02f0555091096b29a6b3995ff0adf41fad25008dcee066b79e"),
    "SST/binary/sentiment-train": (67349, "10a92a297ec38e262386e5a2713b4bc70e5d18ced88b7f54bd171a26e5b34ab5"),
    "SST/binary/sentiment-dev": (872, "9a6c7403b71a9b762158387afe4431253ae10cdfb2319b5275289f3766f48291"),
    "SST/binary/sentiment-test": (1821, "4fefd1cd67526cf87ebc7fafc3afc21cc7cfa6ae53b45e74f77f9456e3c62752"),
    "TREC/train_5500.label": (5452, "8bd6e79493f43bbd22c364587366a1dced54e1e31259eaa92721a0f526031116"),
    "TREC/TREC_10.label": (500, "86ad53c8fc9d397ab2f4be7c967d8efb470b260140557d3e57afad69d1b88b76"),
    "MRPC/msr_paraphrase_train.txt": (4076, "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89"),
    "MRPC/msr_paraphrase_test.txt": (1725, "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784"),
}

#: every file the tasks read, by path relative to the data root
MANIFEST: dict[str, DataFile] = {
    f"downstream/{p}": DataFile(f"downstream/{p}", rows, sha) for p, (rows, sha) in _MANIFEST_ROWS.items()
}


@dataclass(frozen=True)
class Part:
    """A named piece of a task: an STS subset, a split, or one label's file.

    ``files`` are paths relative to the data root (keys of :data:`MANIFEST`); ``label`` is the
    class of every sentence in the part (MR/CR/SUBJ/MPQA), ``None`` where the file has labels.
    """

    name: str
    files: tuple[str, ...]
    label: int | None = None


@dataclass(frozen=True)
class Task:
    """A benchmark task.

    Attributes:
        name: SentEval's name (``STS12``, ``STSBenchmark``, ``MR``, ...).
        kind: ``sts`` (cosine similarity, no training) or ``transfer`` (logistic regression).
        reader: the file format, one of ``sts-subset``, ``stsb``, ``sick``, ``binary``, ``sst``,
            ``trec``, ``mrpc`` (see :mod:`prompteol.evaluation.data`).
        parts: the subsets / splits / label files, in SentEval's order.
        main_score: the headline number (``spearman_all``, ``spearman`` or ``acc``), x100.
        aggregation: ``all``, ``single``, ``inner-kfold``, ``split`` or ``kfold``.
        size: scored pairs (STS) or labelled examples (transfer) over all parts.
        nclasses: classes of a transfer task.
        pair_features: MRPC's ``[|u-v|, u*v]`` features of a sentence pair.
        description: one line for tables and docs.
    """

    name: str
    kind: str
    reader: str
    parts: tuple[Part, ...]
    main_score: str
    aggregation: str
    size: int
    nclasses: int = 0
    pair_features: bool = False
    description: str = ""

    @property
    def files(self) -> tuple[DataFile, ...]:
        return tuple(MANIFEST[p] for part in self.parts for p in part.files)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no part {name!r}; parts: {[p.name for p in self.parts]}")


def _sts(year: int, subsets: list[str], size: int) -> Task:
    folder = f"downstream/STS/STS{year}-en-test"
    parts = tuple(
        Part(s, (f"{folder}/STS.input.{s}.txt", f"{folder}/STS.gs.{s}.txt")) for s in subsets
    )
    return Task(
        name=f"STS{year}", kind="sts", reader="sts-subset", parts=parts, main_score="spearman_all",
        aggregation="all", size=size, description=f"SemEval STS 20{year} ({len(subsets)} subsets)",
    )  # fmt: skip


def _single(name: str, reader: str, split: str, path: str, size: int, description: str) -> Task:
    return Task(
        name=name, kind="sts", reader=reader, parts=(Part(split, (path,)),), main_score="spearman",
        aggregation="single", size=size, description=description,
    )  # fmt: skip


def _binary(name: str, pos: str, neg: str, size: int, description: str) -> Task:
    return Task(
        name=name, kind="transfer", reader="binary", parts=(Part("pos", (pos,), 1), Part("neg", (neg,), 0)),
        main_score="acc", aggregation="inner-kfold", size=size, nclasses=2, description=description,
    )  # fmt: skip


_STSB = "downstream/STS/STSBenchmark"
_TASK_LIST = [
    # Subsets exactly as SentEval (STS13 without SMT, which is not redistributable).
    _sts(12, ["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"], 3108),
    _sts(13, ["FNWN", "headlines", "OnWN"], 1500),
    _sts(14, ["deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"], 3750),
    _sts(15, ["answers-forums", "answers-students", "belief", "headlines", "images"], 3000),
    _sts(16, ["answer-answer", "headlines", "plagiarism", "postediting", "question-question"], 1186),
    _single("STSBenchmark", "stsb", "test", f"{_STSB}/sts-test.csv", 1379, "STS Benchmark, test split"),
    _single("SICKRelatedness", "sick", "test", "downstream/SICK/SICK_test_annotated.txt", 4927,
            "SICK relatedness, test split"),  # fmt: skip
    # The selection split (demonstration search, checkpoint choice); never part of a reported average.
    _single("STSBenchmark-dev", "stsb", "dev", f"{_STSB}/sts-dev.csv", 1500, "STS Benchmark, dev split (selection)"),
    _binary("MR", "downstream/MR/rt-polarity.pos", "downstream/MR/rt-polarity.neg", 10662, "movie review polarity"),
    _binary("CR", "downstream/CR/custrev.pos", "downstream/CR/custrev.neg", 3775, "customer review polarity"),
    # SentEval gives label 1 to the objective sentences.
    _binary("SUBJ", "downstream/SUBJ/subj.objective", "downstream/SUBJ/subj.subjective", 10000,
            "subjectivity (objective = 1)"),  # fmt: skip
    _binary("MPQA", "downstream/MPQA/mpqa.pos", "downstream/MPQA/mpqa.neg", 10606, "opinion polarity"),
    Task(
        name="SST2", kind="transfer", reader="sst",
        parts=tuple(Part(s, (f"downstream/SST/binary/sentiment-{s}",)) for s in ("train", "dev", "test")),
        main_score="acc", aggregation="split", size=67349 + 872 + 1821, nclasses=2,
        description="Stanford sentiment treebank, binary (train/dev/test)",
    ),  # fmt: skip
    Task(
        name="TREC", kind="transfer", reader="trec",
        parts=(Part("train", ("downstream/TREC/train_5500.label",)), Part("test", ("downstream/TREC/TREC_10.label",))),
        main_score="acc", aggregation="kfold", size=5452 + 500, nclasses=6, description="question type (6 classes)",
    ),  # fmt: skip
    Task(
        name="MRPC", kind="transfer", reader="mrpc",
        parts=(Part("train", ("downstream/MRPC/msr_paraphrase_train.txt",)),
               Part("test", ("downstream/MRPC/msr_paraphrase_test.txt",))),
        main_score="acc", aggregation="kfold", size=4076 + 1725, nclasses=2, pair_features=True,
        description="paraphrase detection (accuracy and F1)",
    ),  # fmt: skip
]

#: every task by name, in SentEval's reporting order
TASKS: dict[str, Task] = {t.name: t for t in _TASK_LIST}

#: named groups; ``STSBenchmark-dev`` (the selection split) is in none of them
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "sts": ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"),
    "transfer": ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"),
}
TASK_GROUPS["all"] = TASK_GROUPS["sts"] + TASK_GROUPS["transfer"]

#: Extra STS-style splits for selection and training (e.g. leak-free demonstration search):
#: name -> (reader, path). The evaluation tasks are also accepted by ``load_sts_pairs``.
STS_SPLITS: dict[str, tuple[str, str]] = {
    "STSBenchmark-train": ("stsb", f"{_STSB}/sts-train.csv"),
    "STSBenchmark-dev": ("stsb", f"{_STSB}/sts-dev.csv"),
    "STSBenchmark-test": ("stsb", f"{_STSB}/sts-test.csv"),
    "SICK-train": ("sick", "downstream/SICK/SICK_train.txt"),
    "SICK-trial": ("sick", "downstream/SICK/SICK_trial.txt"),
    "SICK-test": ("sick", "downstream/SICK/SICK_test_annotated.txt"),
}


def get_task(name: str) -> Task:
    """The task called ``name`` (case-insensitive), or :class:`ConfigError` listing the valid names."""
    if name in TASKS:
        return TASKS[name]
    folded = {k.lower(): v for k, v in TASKS.items()}
    if name.lower() in folded:
        return folded[name.lower()]
    raise ConfigError(
        f"unknown task {name!r}; valid tasks are {list(TASKS)} and the groups {list(TASK_GROUPS)}"
    ) from None


def resolve_tasks(tasks: str | Iterable[str | Task]) -> list[Task]:
    """Tasks from a group name, a comma-separated list, or a list of names/groups/Tasks (deduplicated, in order)."""
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    out: list[Task] = []
    for item in tasks:
        if isinstance(item, Task):
            found = [item]
        else:
            found = []
            for piece in str(item).split(","):
                piece = piece.strip()
                if not piece:
                    continue
                group = TASK_GROUPS.get(piece.lower())
                if group:
                    found.extend(TASKS[n] for n in group)
                else:
                    found.append(get_task(piece))
        out.extend(t for t in found if t not in out)
    if not out:
        raise ConfigError(f"no task given; name tasks or one of the groups {list(TASK_GROUPS)}")
    return out
