"""Validation and test: the split's batches are scored teacher-forced, then decoded in one stream."""

import pytorch_lightning as pl
import torch

from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.data.tokenizer import EOS_ID
from seq2seq.models.decoding import decode
from seq2seq.training.module import Seq2SeqModule


def test_the_split_decoded_in_one_stream_gives_the_outputs_of_batch_by_batch_decoding(tiny_cfg):
    cfg = tiny_cfg("data.sizes.val=24", "data.batch.eval_max_tokens=30", "model/attention=bahdanau")
    datamodule = Seq2SeqDataModule(cfg.data, cfg.paths.cache_dir, seed=cfg.seed)
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    with torch.no_grad():  # an untrained model that stops at varied steps: finished rows get refilled
        module.model.decoder.generator.bias[EOS_ID] += 0.2
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)

    batches = list(datamodule.val_dataloader())
    expected = {}
    module.eval()
    with torch.no_grad():
        for batch in batches:
            hyps = decode(module.model, batch, module.decoding, return_attention=True)
            for index, tokens, weights in zip(
                batch.indices.tolist(), hyps.tokens, hyps.attention, strict=True
            ):
                expected[index] = tokens, weights.size(0)
    lengths = {len(tokens) for tokens, _ in expected.values()}
    stopped = sum(steps > len(tokens) for tokens, steps in expected.values())  # an EOS step
    assert len(batches) >= 3 and len(lengths) >= 3 and 0 < stopped < 24  # rows free at several steps
    scored = module._scored
    assert [out.index for out in scored] == list(range(24))
    assert [out.hypothesis for out in scored] == [
        module.tgt_tokenizer.decode(expected[i][0]) for i in range(24)
    ]
    assert [out.steps for out in scored] == [expected[i][1] for i in range(24)]
    assert module.val_results["scores"]["bleu"] >= 0.0 and module._kept == []
