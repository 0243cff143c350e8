"""The benchmark in scripts/benchmark/: batch counts, timing loops, FLOP profiles (checked against torch's
FlopCounterMode), matching helpers, the comparison table, and a tiny end-to-end run of seq2seq's side."""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seq2seq.models.decoder import StackedCell
from seq2seq.models.encoders import make_rnn
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.training.module import set_model_speed
from tests.conftest import TINY, compose_train

# The benchmark is scripts, not part of the package: its modules import each other as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "benchmark"))

from flops import (  # noqa: E402
    FlopProfile,
    counted_flops,
    gpu_bf16_peak,
    joeynmt_flop_profile,
    measure_matmul_flops,
    rnn_token_macs,
    seq2seq_flop_profile,
)
from harness import (  # noqa: E402
    BatchShape,
    UpdateRecord,
    autocast,
    calibrate_budget,
    check_device,
    closest_size,
    cycle,
    length_before_eos,
    mean_target_tokens,
    padding_efficiency,
    peak_rss_mib,
    pin_threads,
    summarise_training,
    time_decoding,
    time_updates,
)
from joeynmt_setup import joeynmt_config  # noqa: E402
from report import (  # noqa: E402
    caveats,
    combine_rounds,
    compare,
    format_rounds,
    format_table,
    round_orders,
    round_ratios,
)
from run import parse_args  # noqa: E402
from seq2seq_side import run_seq2seq  # noqa: E402

# ------------------------------------------------------------------------------------------ counts


def test_batch_shape_counts_real_and_padded_tokens():
    shape = BatchShape.from_lengths([2, 4], [3, 3])
    assert (shape.sentences, shape.src_tokens, shape.tgt_tokens) == (2, 6, 6)
    assert (shape.src_padded, shape.tgt_padded) == (8, 6)
    assert shape.src_tgt_pairs == 2 * 3 + 4 * 3
    with pytest.raises(ValueError, match="equal, non-empty"):
        BatchShape.from_lengths([1, 2], [1])


def test_padding_efficiency_per_side_and_overall():
    shapes = [BatchShape.from_lengths([2, 4], [3, 3]), BatchShape.from_lengths([5], [1])]
    eff = padding_efficiency(shapes)
    assert eff["source"] == pytest.approx(11 / 13)
    assert eff["target"] == pytest.approx(1.0)
    assert eff["all"] == pytest.approx((11 + 7) / (13 + 7))


def test_length_before_eos_skips_padding_and_stops_at_eos():
    assert length_before_eos([5, 6, 3, 7, 8], eos_id=3, pad_id=1) == 2
    assert length_before_eos([5, 1, 6], eos_id=3, pad_id=1) == 2
    assert length_before_eos([3, 5], eos_id=3, pad_id=1) == 0


# ------------------------------------------------------------------------------------------ timing loops


def test_time_updates_runs_warmup_but_records_only_timed_updates():
    seen = []
    batches = iter(range(10))
    records = time_updates(
        lambda: next(batches),
        seen.append,
        lambda b: BatchShape.from_lengths([b + 1], [1]),
        warmup=2,
        updates=3,
    )
    assert seen == [0, 1, 2, 3, 4]
    assert [r.shape.src_tokens for r in records] == [3, 4, 5]
    assert all(r.seconds > 0 for r in records)
    with pytest.raises(ValueError, match="updates >= 1"):
        time_updates(lambda: 0, seen.append, lambda b: None, warmup=0, updates=0)


def test_cycle_moves_on_to_the_next_epoch():
    next_batch = cycle(lambda epoch: [10 * epoch, 10 * epoch + 1])
    assert [next_batch() for _ in range(5)] == [0, 1, 10, 11, 20]
    empty = cycle(lambda epoch: [])
    with pytest.raises(RuntimeError, match="no batches"):
        empty()


def test_summarise_training_takes_the_median_over_updates():
    profile = FlopProfile(per_src_token=10, per_tgt_token=100, per_sentence=0, per_src_tgt_pair=1)
    records = [
        UpdateRecord(BatchShape.from_lengths([4], [t]), seconds)
        for t, seconds in ((100, 1.0), (300, 1.0), (200, 4.0))
    ]
    summary = summarise_training(records, profile)
    assert summary["tgt_tokens_per_s"] == pytest.approx(100)  # median of 100, 300, 50
    assert summary["src_tgt_tokens_per_s"] == pytest.approx(104)
    assert summary["tgt_tokens_per_s_overall"] == pytest.approx(600 / 6)
    assert summary["tgt_tokens_per_update"] == pytest.approx(200)
    flops = sum(3 * (10 * 4 + 100 * t + 4 * t) for t in (100, 300, 200))
    assert summary["flops_per_tgt_token"] == pytest.approx(flops / 600)
    assert summary["model_flops_per_s"] == pytest.approx(flops / 6)


def test_time_decoding_counts_sentences_and_tokens():
    result = time_decoding([[2, 3], [1]], lambda batch: [n * 2 for n in batch])
    assert (result["sentences"], result["output_tokens"]) == (3, 12)
    assert result["mean_output_length"] == pytest.approx(4)
    assert result["output_tokens_per_s"] == pytest.approx(12 / result["seconds"])


# ------------------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize("rnn", [nn.GRU(4, 3, num_layers=2, bidirectional=True), nn.RNN(4, 3, num_layers=2)])
def test_rnn_token_macs_matches_torch_counter(rnn):
    x = torch.randn(1, 5, 4)
    assert counted_flops(lambda: rnn(x)) == 2 * 5 * rnn_token_macs(rnn)


def test_rnn_token_macs_for_lstm_has_four_gates():
    # torch's counter does not see the fused CPU LSTM, so this one is checked by hand
    lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True)
    assert rnn_token_macs(lstm) == 2 * 4 * (4 * 3 + 9) + 2 * 4 * (6 * 3 + 9)


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
def test_rnn_token_macs_of_a_cell_stack_matches_the_fused_rnn_and_torch_counter(rnn_type):
    # seq2seq's decoder steps a stack of nn.*Cell: counted from its weight shapes, like the fused module
    cells = StackedCell(rnn_type, 5, 7, 2, 0.0)
    assert rnn_token_macs(cells) == rnn_token_macs(make_rnn(rnn_type, 5, 7, 2, 0.0))
    x, h = torch.randn(3, 5), torch.randn(2, 3, 7)
    hidden = (h, torch.randn(2, 3, 7)) if rnn_type == "lstm" else h
    cells.onednn_matmul = False  # without autograd its oneDNN products pad the 3 rows to 8, and count them
    assert counted_flops(lambda: cells(x, hidden)) == 2 * 3 * rnn_token_macs(cells)


def test_rnn_token_macs_needs_recurrent_weights():
    with pytest.raises(ValueError, match="no weight_ih"):
        rnn_token_macs(nn.Linear(3, 4))


@pytest.mark.parametrize(
    "attention, rnn_type, layers, bidirectional, context",
    [
        ("bahdanau", "gru", 1, True, "init"),
        ("luong_dot", "gru", 2, True, "init"),
        ("luong_general", "rnn", 1, False, "init"),
        ("luong_concat", "gru", 2, False, "init"),
        ("none", "gru", 1, True, "every_step"),
        ("none", "rnn", 2, True, "init"),
    ],
)
def test_seq2seq_flop_profile_matches_torch_counter(attention, rnn_type, layers, bidirectional, context):
    model = EncoderDecoder(
        11,
        13,
        6,
        8,
        rnn_type,
        layers,
        bidirectional,
        decoder_layers=layers,
        attention=attention,
        context=context,
    )
    src, tgt = torch.full((3, 7), 5), torch.full((3, 4), 5)
    predicted = seq2seq_flop_profile(model).forward(BatchShape.from_lengths([7] * 3, [4] * 3))
    set_model_speed(model, {"onednn_matmul": False})  # oneDNN pads rows: its count includes the padding
    assert counted_flops(lambda: model(src, torch.tensor([7, 7, 7]), tgt)) == predicted
    set_model_speed(model, {"onednn_matmul": True})
    assert counted_flops(lambda: model(src, torch.tensor([7, 7, 7]), tgt)) >= predicted


def test_joeynmt_flop_profile_reads_its_module_layout():
    # JoeyNMT's RecurrentEncoder/Decoder layout (attribute names as in joeynmt 2.3.0): E=4, 3 per direction
    # (memory K=6), decoder d=5 with input feeding, vocabulary 7, Bahdanau attention.
    attention = SimpleNamespace(
        key_layer=nn.Linear(6, 5), query_layer=nn.Linear(5, 5), energy_layer=nn.Linear(5, 1)
    )
    model = SimpleNamespace(
        encoder=SimpleNamespace(rnn=nn.GRU(4, 3, bidirectional=True), output_size=6),
        decoder=SimpleNamespace(
            rnn=nn.GRU(4 + 5, 5),
            attention=attention,
            att_vector_layer=nn.Linear(5 + 6, 5),
            output_layer=nn.Linear(5, 7),
            bridge_layer=nn.Linear(6, 5),
            num_layers=1,
        ),
    )
    profile = joeynmt_flop_profile(model)
    assert profile.per_src_token == 2 * (2 * 3 * (4 * 3 + 9) + 6 * 5)
    assert profile.per_tgt_token == 2 * (3 * (9 * 5 + 25) + 25 + 11 * 5 + 5 * 7)
    assert profile.per_sentence == 2 * 6 * 5
    assert profile.per_src_tgt_pair == 2 * (5 + 6)


def test_joeynmt_embeddings_start_as_seq2seqs(tmp_path):
    # JoeyNMT's default embedding initialisation (xavier, std ≈ 0.016 at 8000 × 256) held its loss at the unigram
    # plateau far longer than seq2seq's, so the benchmark matches seq2seq's: the std its embeddings are drawn with.
    cfg = compose_train(tmp_path)
    args = parse_args(["--work", str(tmp_path / "work")])
    joey = joeynmt_config(args, cfg, tmp_path / "data", ("en", "es"))["model"]
    assert joey["embed_initializer"] == "normal"
    model = EncoderDecoder.from_config(cfg.model, 8000, 8000)
    for embedding in (model.src_embedding, model.decoder.embedding):
        weights = embedding.weight[1:]  # row 0 is the padding row, zeros
        assert abs(weights.mean().item()) < 0.01
        assert weights.std().item() == pytest.approx(joey["embed_init_weight"], rel=0.02)


def test_training_flops_are_three_forward_passes():
    profile = FlopProfile(1, 2, 3, 4)
    shape = BatchShape.from_lengths([2], [3])
    assert profile.forward(shape) == 2 + 6 + 3 + 24
    assert profile.training(shape) == 3 * profile.forward(shape)


def test_measure_matmul_flops_is_positive():
    assert measure_matmul_flops(size=32, seconds=0.01) > 0


# ------------------------------------------------------------------------------------------ matching


def test_closest_size_picks_the_nearest_count():
    assert closest_size(50, lambda h: h * h, range(5, 11)) == (7, 49)
    with pytest.raises(ValueError, match="no candidate"):
        closest_size(50, lambda h: h, [])


def test_calibrate_budget_finds_the_smallest_budget_reaching_the_target():
    assert calibrate_budget(lambda b: b / 2, 100, low=1, high=1000) == (200, 100)
    assert calibrate_budget(lambda b: b / 2, 1e9, low=1, high=10) == (10, 5)


def test_mean_target_tokens_per_batch():
    assert mean_target_tokens([[0, 1], [2]], [3, 4, 5]) == pytest.approx(6)


# ------------------------------------------------------------------------------------------ comparison, table


def _system(tokens_per_s, greedy, beam, rss, params=1_000_000):
    decode = lambda speed: {  # noqa: E731
        "output_tokens_per_s": speed,
        "sentences_per_s": speed / 10,
        "mean_output_length": 10.0,
    }
    return {
        "params": params,
        "train": {
            "tgt_tokens_per_s": tokens_per_s,
            "src_tgt_tokens_per_s": 2 * tokens_per_s,
            "tgt_tokens_per_update": 950.0,
            "padding_efficiency": {"source": 0.9, "target": 0.95, "all": 0.93},
            "flops_per_tgt_token": 2.4e7,
            "model_flops_per_s": 2.4e7 * tokens_per_s,
        },
        "greedy": decode(greedy),
        "beam": beam if isinstance(beam, dict) else decode(beam),
        "peak_rss_mib": rss,
        "flop_check": {"counted": 100, "predicted": 100},
        "reference_mean_length": 12.0,
    }


def _results(ours, joey):
    systems = {"seq2seq": ours, "joeynmt": joey}
    return {"systems": systems, "comparison": compare(systems), "matmul_flops_per_s": 5e10, "beam_size": 5}


def _with_lightning(system, tokens_per_s, utilisation=0.6):
    system["lightning"] = {"tgt_tokens_per_s": tokens_per_s}
    system["train"]["flop_utilisation"] = utilisation
    return system


def test_compare_computes_ratios_and_targets():
    ours = _with_lightning(_system(3200, 13000, 2000, 900), 2800)
    results = _results(ours, _system(1000, 4000, 1100, 1000, params=1_040_000))
    ratios, met = results["comparison"]["ratios"], results["comparison"]["met"]
    assert ratios["train_tokens_per_s"] == pytest.approx(3.2)
    assert ratios["beam_tokens_per_s"] == pytest.approx(2000 / 1100)
    assert ratios["lightning_vs_harness"] == pytest.approx(2800 / 3200)
    assert ratios["lightning_train_tokens_per_s"] == pytest.approx(2.8)
    assert met == {
        "params": True,
        "padding_efficiency": True,
        "peak_rss_mib": True,
        "train_tokens_per_s": True,
        "greedy_tokens_per_s": True,
        "beam_tokens_per_s": False,
        "lightning_vs_harness": False,  # 0.875 < 0.90
        "flop_utilisation": True,
    }
    # A/B/A: with the harness timed again after the Lightning loop, the row is over the mean of both runs
    ours["train_after_lightning"] = {"tgt_tokens_per_s": 2400}
    again = _results(ours, _system(1000, 4000, 1100, 1000, params=1_040_000))["comparison"]
    assert again["ratios"]["lightning_vs_harness"] == pytest.approx(2800 / 2800)
    assert again["met"]["lightning_vs_harness"] is True
    # the JoeyNMT ratio keeps the first run
    assert again["ratios"]["train_tokens_per_s"] == pytest.approx(3.2)
    # results written before the Lightning row existed: no ratio, no mark
    old = _results(_system(3200, 9000, 2000, 900), _system(1000, 4000, 1100, 1000))["comparison"]
    assert old["ratios"]["lightning_vs_harness"] is None and old["met"]["lightning_vs_harness"] is None


def test_rounds_alternate_the_order_and_combine_into_medians():
    assert round_orders(1) == [("seq2seq", "joeynmt")]
    assert round_orders(3) == [("seq2seq", "joeynmt"), ("joeynmt", "seq2seq"), ("seq2seq", "joeynmt")]
    ours = [_system(3000, 9000, 2000, 900), _system(2000, 8000, 1800, 950), _system(2600, 10000, 2100, 910)]
    joey = [_system(1000, 4000, 1000, 1000), _system(800, 3000, 900, 1000), _system(900, 3500, 950, 1000)]
    combined = combine_rounds(ours)
    assert combined["train"]["tgt_tokens_per_s"] == 2600  # the median of each number, nested ones too
    assert combined["greedy"]["output_tokens_per_s"] == 9000 and combined["peak_rss_mib"] == 910
    assert combined["params"] == 1_000_000 and isinstance(combined["params"], int)  # equal in every round
    assert combine_rounds(ours[:2])["train"]["tgt_tokens_per_s"] == 2500  # two rounds: their mean
    ratios = round_ratios({"seq2seq": ours, "joeynmt": joey})
    assert [r["train_tokens_per_s"] for r in ratios] == pytest.approx([3.0, 2.5, 2600 / 900])
    results = {
        "rounds": [{"order": order, "ratios": r} for order, r in zip(round_orders(3), ratios, strict=True)]
    }
    lines = format_rounds(results).splitlines()
    assert lines[0] == "| round | measured first | train | greedy | beam | peak memory |"
    assert lines[3] == "| 2 | JoeyNMT 2.3.0 | 2.50× | 2.67× | 2.00× | 0.95× |"
    assert format_rounds({"rounds": results["rounds"][:1]}) == ""  # one round: nothing to add


def test_format_table_shows_both_systems_ratios_and_marks():
    ours = _with_lightning(_system(1600, 9000, 2000, 900), 1500, utilisation=0.768)
    table = format_table(_results(ours, _system(1000, 4000, 1100, 1000)))
    lines = table.splitlines()
    assert lines[0] == "|  | seq2seq | JoeyNMT 2.3.0 | seq2seq / JoeyNMT | target |"
    assert all(line.count("|") == 6 for line in lines)
    train = next(line for line in lines if line.startswith("| train: target tokens/s"))
    assert "| 1,600 | 1,000 | 1.60× | ≥ 3× ✗ |" in train
    lightning = next(line for line in lines if line.startswith("| train through Lightning's Trainer"))
    assert "| 1,500 | – | 1.50× | ≥ 0.90 × harness (0.94) ✓ |" in lightning
    beam = next(line for line in lines if line.startswith("| beam 5: output tokens/s"))
    assert beam.endswith("≥ 3× ✗ |")
    utilisation = next(line for line in lines if "FLOP utilisation (of 50 GFLOP/s" in line)
    assert "| 76.8 % | 48.0 % |" in utilisation and utilisation.endswith("≥ 50 % (Bible) ✓ |")
    assert not any("MFU" in line for line in lines)  # CPU results: no GPU peak row


def test_format_table_on_cuda_adds_mfu_and_gpu_memory():
    ours, joey = _system(1600, 9000, 2000, 900), _system(1000, 4000, 1100, 1000)
    ours["peak_gpu_mib"], joey["peak_gpu_mib"] = 512.0, 700.0
    results = {**_results(ours, joey), "gpu_bf16_peak_flops": 1e12}
    lines = format_table(results).splitlines()
    mfu = next(line for line in lines if "MFU (of the GPU's 1 TFLOP/s bf16 peak)" in line)
    assert "| 3.8 % | 2.4 % |" in mfu  # 2.4e7 FLOPs/token × 1600 tokens/s / 1e12
    assert "| 512 | 700 |" in next(line for line in lines if line.startswith("| peak GPU memory"))


def test_skipped_beam_search_is_shown_and_flagged():
    skipped = {"skipped": "not run"}  # e.g. a results.json written without a beam search
    results = _results(_system(1600, 9000, skipped, 900), _system(1000, 4000, 1100, 1000))
    assert results["comparison"]["met"]["beam_tokens_per_s"] is None
    beam = next(line for line in format_table(results).splitlines() if line.startswith("| beam 5: output"))
    assert "| skipped | 1,100 | –× |" in beam
    lightning = next(line for line in format_table(results).splitlines() if "Lightning" in line)
    assert "| – | – | –× |" in lightning  # not measured: shown as such
    assert any("beam skipped" in note for note in caveats(results))


def test_caveats_flag_unmatched_models_and_degenerate_decoding():
    joey = _system(1000, 4000, 1100, 1000, params=2_000_000)
    joey["beam"]["mean_output_length"] = 1.0
    notes = caveats(_results(_system(1600, 9000, 2000, 900), joey))
    assert any("parameter counts differ" in note for note in notes)
    assert any(note.startswith("joeynmt: beam outputs average 1.0 tokens") for note in notes)
    assert caveats(_results(_system(1600, 9000, 2000, 900), _system(1000, 4000, 1100, 1000))) == []


# ------------------------------------------------------------------------------------------ process, smoke run


@pytest.fixture
def restore_threads():
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    yield
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


def test_pin_threads_and_peak_memory(restore_threads):
    assert pin_threads(1) == [min(os.sched_getaffinity(0))]
    assert torch.get_num_threads() == 1
    assert peak_rss_mib() > 10
    with pytest.raises(ValueError, match="at least 1"):
        pin_threads(0)
    with pytest.raises(ValueError, match="may use only CPUs"):
        pin_threads(10_000)


def test_seq2seq_side_end_to_end(tmp_path, restore_threads):
    plan = {
        "overrides": [*TINY, f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"],
        "threads": 1,
        "warmup": 1,
        "updates": 2,
        "decode_sentences": 5,
        "beam_size": 2,
        "beam_alpha": 1.0,
        "max_length_ratio": 1.5,
        "max_length_constant": 1.5,
    }
    result = run_seq2seq(plan)
    train = result["train"]
    assert train["updates"] == 2 and train["tgt_tokens_per_s"] > 0
    # the same updates through Lightning's Trainer, the real training loop: same batch sizes
    lightning = result["lightning"]
    assert lightning["updates"] == 2 and lightning["tgt_tokens_per_s"] > 0
    assert lightning["tgt_tokens_per_update"] == pytest.approx(train["tgt_tokens_per_update"], rel=0.5)
    again = result["train_after_lightning"]  # A/B/A: the harness once more, on the same batches
    assert again["updates"] == 2 and again["tgt_tokens_per_update"] == train["tgt_tokens_per_update"]
    assert result["device"] == "cpu" and result["peak_gpu_mib"] is None
    assert 0 < train["padding_efficiency"]["all"] <= 1
    assert result["flop_check"]["counted"] == result["flop_check"]["predicted"]
    for kind in ("greedy", "beam"):
        assert result[kind]["sentences"] == 5
        assert (
            0 <= result[kind]["mean_output_length"] <= 1.5 * (8 + 1) + 1
        )  # the copy task's longest source: 8
    assert result["setup"]["hidden_size"] == 16 and result["threads"] == 1
    assert result["params"] == sum(p.numel() for p in EncoderDecoder(
        result["setup"]["src_vocab"], result["setup"]["tgt_vocab"], 8, 16).parameters())  # fmt: skip
    assert 0 < result["peak_rss_mib"] <= result["peak_rss_mib_with_lightning"]


# ------------------------------------------------------------------------------------------ GPU options


def test_cuda_options_are_checked_before_anything_runs():
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device=cuda: torch .* sees no CUDA device"):
            check_device("cuda")
    with pytest.raises(SystemExit, match="choose cpu or cuda"):
        check_device("tpu")
    assert check_device("cpu") == torch.device("cpu")
    assert parse_args(["--device", "cuda"]).precision == "bf16"  # bf16 autocast by default on a GPU
    assert parse_args([]).precision == "32"
    with pytest.raises(SystemExit):
        parse_args(["--precision", "bf16"])  # CPU autocast is not what the benchmark measures
    with pytest.raises(SystemExit):
        parse_args(["--joeynmt-fp16"])
    before = parse_args(
        ["--seq2seq-override", "speed.fast_unroll=false", "--seq2seq-override", "speed.loss_chunk=0"]
    )
    assert before.seq2seq_override == ["speed.fast_unroll=false", "speed.loss_chunk=0"]


def test_autocast_and_gpu_peaks():
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert gpu_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu_bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_bf16_peak("Tesla V100-SXM2-16GB") is None  # no bf16: MFU needs --gpu-peak-tflops


@pytest.mark.slow
def test_lever_times_prints_one_row_per_setting(tmp_path):
    """scripts/benchmark/lever_times.py: the settings' models updated in turn on the same batches, a row each."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark" / "lever_times.py"
    extra = ["data.sizes.train=60", "data.sizes.val=10", "data.sizes.test=10", f"paths.cache_dir={tmp_path}"]
    out = subprocess.run(
        [sys.executable, script, "--corpus", str(tmp_path / "no-bible"), "--hidden-size", "16",
         "--embedding-size", "8", "--target-tokens", "60", "--updates", "3", "--warmup", "0",
         "--threads", "1", "--work", str(tmp_path / "work"), *(f"--extra={e}" for e in extra),
         "--setting", "on:", "--setting", "off: speed.step_weights=false speed.fused_optimizer=false",
         "--setting", "gates kept: speed.recompute_attention=false speed.compiled_kernels=false", "--profile", "6",
         "--before", "HEAD", "--module", "seq2seq.models.step_attention"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| o", "| g", "| at"))]
    # --before: the first setting again, with the module's code at that revision (here the same code)
    assert [row.split("|")[1].strip() for row in rows] == ["on", "off", "gates kept", "at HEAD"]
    assert all(float(row.split("|")[3].strip().replace(",", "")) > 0 for row in rows)  # tokens/s
    assert float(rows[0].split("|")[4]) == 1.0  # the first setting's paired ratio to itself
    assert all(float(row.split("|")[5].strip().replace(",", "")) >= 0 for row in rows)  # page faults/update
    saved = [float(row.split("|")[6]) for row in rows]  # MiB saved for backward
    on_saved, _, kept_saved, before_saved = saved
    assert 0 < on_saved < kept_saved  # each step's attention gates kept, instead of computed again
    assert before_saved == on_saved
    assert "toy task, bahdanau: hidden 16" in out.stdout  # the set-up and the model's attention (--attention)
    assert "on: 10 updates, by operator" in out.stdout and "Self CPU time total" in out.stdout
    bad = subprocess.run(
        [sys.executable, script, "--setting", "no colon here"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "a colon after the label" in bad.stderr
    for wrong, says in (
        (["--before", "nosuchrev", "--module", "seq2seq.models.attention"], "--before nosuchrev: cannot"),
        (["--before", "HEAD"], "--before and --module go together"),
    ):
        bad = subprocess.run([sys.executable, script, *wrong], capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and says in bad.stderr, bad.stderr[-1000:]
        assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_decode_times_prints_a_row_per_search_budget_refill_and_copies_with_the_same_outputs(tmp_path):
    """scripts/benchmark/decode_times.py: each search at each budget, refilled or not, with row-major weight copies
    or not, every output the same."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark" / "decode_times.py"
    extra = ["data.sizes.train=60", "data.sizes.val=10", "data.sizes.test=10", f"paths.cache_dir={tmp_path}"]
    out = subprocess.run(
        [sys.executable, script, "--corpus", str(tmp_path / "no-bible"), "--hidden-size", "16",
         "--embedding-size", "8", "--target-tokens", "60", "--train-updates", "2", "--sentences", "10",
         "--threads", "1", "--work", str(tmp_path / "work"), *(f"--extra={e}" for e in extra),
         "--budget", "40", "--budget", "400", "--copies", "on", "--copies", "off", "--rounds", "2",
         "--profile", "5"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()]
    rows = [row for row in rows if row and row[0] in ("greedy", "beam")]
    assert [(row[0], row[1], row[2], row[3], int(row[4])) for row in rows] == [
        (search, budget, refill, copies, batches)
        for search in ("greedy", "beam")
        for budget, batches in (("40", 10), ("400", 2))
        for refill in ("on", "off")
        for copies in ("on", "off")
    ]  # a 40-token budget holds one of these sentences per batch; 400 holds several
    assert all(float(row[5].replace(",", "")) > 0 and row[8] == "yes" for row in rows)
    assert all(float(row[9]) >= 0 for row in rows)  # peak memory growth of each setting, in MiB
    assert "toy task: hidden 16, 2 updates, 10 test sentences" in out.stdout
    assert "greedy, budget 40, refill on:" in out.stdout and "beam, budget 40, refill on:" in out.stdout
    assert out.stdout.count("Self CPU time total") == 2  # one profile per search


def test_matmul_rates_prints_both_libraries_for_every_shape():
    """scripts/benchmark/matmul_rates.py: a row per product, MKL's and oneDNN's rates and their ratio."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark" / "matmul_rates.py"
    out = subprocess.run(
        [sys.executable, script, "--threads", "1", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()]
    rows = [row for row in rows if len(row) == 5 and " × " in row[1]][1:]  # after the header
    assert len(rows) == 8 and rows[0][1] == "8 × 288 × 8000"
    for _, _, mkl, dnn, ratio in rows:
        assert float(mkl) > 0 and float(dnn) > 0
        # the rates are printed rounded to whole GFLOP/s (±0.5), the ratio from the unrounded ones (±0.005)
        low, high = (float(dnn) - 0.5) / (float(mkl) + 0.5), (float(dnn) + 0.5) / max(float(mkl) - 0.5, 0.1)
        assert low - 0.005 <= float(ratio.rstrip("×")) <= high + 0.005
