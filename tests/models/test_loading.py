"""LoadReport: the used / new / unused lists match what from_pretrained really did."""

import torch
from transformers import T5ForSequenceClassification

from t5lab.models.loading import LoadReport, from_pretrained_with_report


def test_report_lists_new_and_used_tensors(t5_checkpoint, tiny_t5):
    model, report = from_pretrained_with_report(T5ForSequenceClassification, t5_checkpoint)
    assert model.load_report is report
    new_head = {n for n in model.state_dict() if n.startswith("classification_head.")}
    assert set(report.new) == new_head
    assert "transformer.encoder.block.0.layer.0.SelfAttention.q.weight" in report.used
    # the used tensors really came from the checkpoint
    torch.testing.assert_close(
        model.transformer.encoder.block[0].layer[0].SelfAttention.q.weight,
        tiny_t5.encoder.block[0].layer[0].SelfAttention.q.weight,
    )
    assert not set(report.used) & set(report.new)
    text = report.summary()
    assert f"{len(report.new)} new" in text and "classification_head.dense.weight" in text


def test_report_collapses_layer_indices():
    report = LoadReport(
        source="x",
        unused=[f"encoder.block.{i}.layer.0.SelfAttention.q.weight" for i in range(6)],
    )
    assert "encoder.block.*.layer.0.SelfAttention.q.weight" in report.summary()
    assert "6 in the checkpoint unused" in report.summary()
