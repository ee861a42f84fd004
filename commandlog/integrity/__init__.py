"""Integrity: a tamper-evident log — signed, chained Merkle seals over the committed log rows, their verification
and inclusion proofs (issue [integrity]). Nothing here runs on the write path."""

from commandlog.integrity.errors import NotSealedError, ProofError, RowNotFoundError, SealError, SealKeyError
from commandlog.integrity.proof import inclusion_proof, proof_valid
from commandlog.integrity.sealing import SealReport, seal, summary_line
from commandlog.integrity.verify import KINDS, Finding, verify

__all__ = [
    "KINDS", "Finding", "NotSealedError", "ProofError", "RowNotFoundError", "SealError", "SealKeyError", "SealReport",
    "inclusion_proof", "proof_valid", "seal", "summary_line", "verify",
]
