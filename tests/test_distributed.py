"""One clip over several processes (torchrun, gloo on the CPU): same output as one process, and faults that stop
every process in bounded time with one message and no output file.

The single-process baseline runs in this process with one torch thread, like each torchrun worker (torchrun sets
OMP_NUM_THREADS=1), and every run uses one window per UNet call: a batched UNet call rounds differently from
single calls (~1e-5 in a single process too), which is not what these tests are about.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fakes import one_torch_thread
from tests.torchrun import torchrun
from vexpress_model.cli import main
from vexpress_model.errors import DistributedSetupError
from vexpress_model.pipeline.distributed import Launch, process_device, torchrun_launch
from vexpress_model.pipeline.windows import context_windows, decode_rounds, rank_frames, shard_windows

FAULTS = Path(__file__).with_name("distributed_faults.py")


# ------------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("num_windows", [1, 2, 4, 5, 7, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_window_shares_are_contiguous_balanced_and_cover_everything(num_windows: int, world_size: int) -> None:
    windows = tuple(range(6 * i, 6 * i + 8) for i in range(num_windows))
    shares = [shard_windows(windows, rank, world_size) for rank in range(world_size)]
    assert tuple(w for share in shares for w in share) == windows  # contiguous, in order, each window once
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) == -(-num_windows // world_size)


def test_window_shares_balance_frames_of_real_plans() -> None:
    windows = context_windows(150, 24, 4, "fixed")  # 8 windows, the last pulled back
    shares = [shard_windows(windows, rank, 3) for rank in range(3)]
    assert [len(share) for share in shares] == [3, 2, 3]
    with pytest.raises(ValueError):
        shard_windows(windows, 3, 3)


def test_decode_rounds_deal_chunks_round_robin() -> None:
    rounds = decode_rounds(11, 2, 3)
    assert rounds == [[range(0, 2), range(2, 4), range(4, 6)], [range(6, 8), range(8, 10), range(10, 11)]]
    assert rank_frames(rounds, 1) == [2, 3, 8, 9]
    assert rank_frames(rounds, 2) == [4, 5, 10]
    assert sorted(f for rank in range(3) for f in rank_frames(rounds, rank)) == list(range(11))
    assert rank_frames(decode_rounds(3, 2, 3), 2) == []  # fewer chunks than ranks


def test_torchrun_environment_and_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torchrun_launch({}) is None
    assert torchrun_launch({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None  # one process: a plain run
    launch = torchrun_launch({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert launch == Launch(rank=3, world_size=4, local_rank=1) and not launch.is_main
    with pytest.raises(DistributedSetupError, match="RANK"):
        torchrun_launch({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert process_device("cpu", launch) == "cpu"
    assert process_device("cuda:0", None) == "cuda:0"
    with pytest.raises(DistributedSetupError, match="cuda:LOCAL_RANK"):
        process_device("cuda:0", launch)
    # The GPUs this machine has, as torch reports them: none, one, two.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_device("auto", launch) == "cpu"
    with pytest.raises(DistributedSetupError, match="sees no CUDA GPU; use --device cpu") as refused:
        process_device("cuda", launch)
    assert refused.value.same_on_every_process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DistributedSetupError) as refused:
        process_device("cuda", launch)
    assert str(refused.value) == ("rank 3 of 4: each process takes its own GPU (cuda:LOCAL_RANK), but this machine "
                                  "has 1; start torchrun with --nproc_per_node 1 or fewer, or use --device cpu")
    assert not refused.value.same_on_every_process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert process_device("cuda", launch) == process_device("auto", launch) == "cuda:1"


# ------------------------------------------------------------------------------------------------- equality


def _flags(model_dir: Path, media_dir: Path, out: Path, compat: str) -> list[str]:
    # 2 s at 15 fps: 30 frames in 5 windows of 8 (fixed), 26 frames in 4 windows (original) -- neither divisible
    # by 3, the fixed one not by 2 either; 64x64, 2 steps, decode chunks of 2 frames dealt over the ranks.
    return ["--model_dir", str(model_dir), "--reference_image_path", str(media_dir / "portrait.png"),
            "--audio_path", str(media_dir / "speech_16000_mono.wav"), "--retarget_strategy", "fix_face",
            "--num_inference_steps", "2", "--fps", "15", "--context_frames", "8", "--context_overlap", "2",
            "--image_width", "64", "--image_height", "64", "--device", "cpu", "--dtype", "fp32",
            "--compat", compat, "--window_batch_size", "1", "--no_download", "--quiet",
            "--output_path", str(out / "video.mp4"), "--dump_dir", str(out / "dump")]



@pytest.fixture(scope="module")
def single_runs(tiny_model_with_detector: Path, media_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Path]:
    runs = {}
    for compat in ("fixed", "original"):
        out = tmp_path_factory.mktemp(f"single_{compat}")
        with one_torch_thread():
            assert main(_flags(tiny_model_with_detector, media_dir, out, compat)) == 0
        runs[compat] = out
    return runs


@pytest.mark.parametrize("nproc,compat", [(2, "fixed"), (3, "fixed"), (2, "original"), (3, "original")])
def test_several_processes_give_the_single_process_output(
    nproc: int, compat: str, single_runs: dict[str, Path], tiny_model_with_detector: Path, media_dir: Path,
    tmp_path: Path,
) -> None:
    from tests.cli_checks import read_video

    result = torchrun(nproc, ["-m", "vexpress_model", *_flags(tiny_model_with_detector, media_dir, tmp_path, compat),
                              "--dist_timeout", "120"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines() == [str(tmp_path / "video.mp4")]  # printed once, by rank 0
    single = single_runs[compat]
    windows = 5 if compat == "fixed" else 4
    for name in ("init_latents", "ref_latent", "audio_proj_output", "latents_step0", "latents_final"):
        ours, theirs = np.load(tmp_path / "dump" / f"{name}.npy"), np.load(single / "dump" / f"{name}.npy")
        assert ours.shape == theirs.shape, name
        assert np.abs(ours - theirs).max() <= 1e-5, f"{name}, {nproc} processes, {windows} windows"
    frames = np.load(tmp_path / "dump" / "frames_uint8.npy").astype(int)
    expected = np.load(single / "dump" / "frames_uint8.npy").astype(int)
    assert frames.shape == expected.shape == (30 if compat == "fixed" else 26, 64, 64, 3)
    assert np.abs(frames - expected).max() <= 1
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == sorted(p.name for p in (single / "dump").iterdir())
    video, single_video = read_video(tmp_path / "video.mp4"), read_video(single / "video.mp4")
    assert video["frames"] == single_video["frames"] and video["audio_codec"] == "aac"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "video.mp4"]  # no temporary files


# --------------------------------------------------------------------------------------------------- faults


def _fault_run(mode: str, rank: int, model_dir: Path, media_dir: Path, out: Path, timeout_s: float = 60):
    flags = _flags(model_dir, media_dir, out, "fixed")
    flags = flags[: flags.index("--dump_dir")]  # the output file only
    return torchrun(2, [str(FAULTS), mode, str(rank), "--", *flags, "--dist_timeout", str(timeout_s)], cwd=out,
                    timeout=240)


def _assert_nothing_written(out: Path) -> None:
    assert [p.name for p in out.iterdir()] == [], "an output or temporary file was left behind"


def test_a_rank_that_raises_stops_every_process(tiny_model_with_detector, media_dir, tmp_path) -> None:
    result = _fault_run("raise", 1, tiny_model_with_detector, media_dir, tmp_path)
    assert result.returncode != 0
    errors = result.error_lines()
    assert errors == ["error: rank 1 of 2 failed: RuntimeError: injected failure on rank 1"], result.stderr[-4000:]
    assert "rank      : 1" in result.stderr  # torchrun's summary names the same rank as the root cause
    _assert_nothing_written(tmp_path)


def test_a_killed_rank_stops_every_process(tiny_model_with_detector, media_dir, tmp_path) -> None:
    result = _fault_run("kill", 1, tiny_model_with_detector, media_dir, tmp_path)
    assert result.returncode != 0
    assert result.error_lines() == [], result.stderr[-4000:]  # the killed process cannot speak; torchrun does:
    assert "Signal 9 (SIGKILL) received" in result.stderr and "rank      : 1" in result.stderr
    assert "rank 0 of 2 stopped" in result.stderr
    _assert_nothing_written(tmp_path)


def test_a_hanging_rank_is_ended_by_the_process_group_timeout(tiny_model_with_detector, media_dir, tmp_path) -> None:
    # Rank 1 sleeps in the UNet (as if its GPU hung): no process exits, so torchrun sees no failure; rank 0's
    # all-reduce gives up after --dist_timeout, it exits, and torchrun then stops rank 1.
    result = _fault_run("hang", 1, tiny_model_with_detector, media_dir, tmp_path, timeout_s=8)
    assert result.returncode != 0
    assert "rank 0 of 2 stopped: lost the other processes" in result.stderr, result.stderr[-4000:]
    assert result.seconds < 150
    _assert_nothing_written(tmp_path)


def test_a_bad_input_on_one_rank_is_reported_once_before_loading(tiny_model_with_detector, media_dir, tmp_path):
    result = _fault_run("bad_input", 1, tiny_model_with_detector, media_dir, tmp_path)
    assert result.returncode != 0
    assert result.error_lines() == [
        "error: rank 1 of 2: audio file missing_on_this_rank.wav does not exist; check --audio_path"
    ], result.stderr[-4000:]
    assert "loading networks" not in result.stderr
    _assert_nothing_written(tmp_path)


def test_device_cuda_without_a_gpu_is_one_line(tiny_model_with_detector, media_dir, tmp_path) -> None:
    """Every process meets the same missing GPU: one line (not one per process, not torch's AttributeError)."""
    flags = _flags(tiny_model_with_detector, media_dir, tmp_path, "fixed")
    flags[flags.index("--device") + 1] = "cuda"
    result = torchrun(2, ["-m", "vexpress_model", *flags[: flags.index("--dump_dir")]], cwd=tmp_path,
                      env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, also on a machine that has one
    assert result.returncode != 0
    assert result.error_lines() == ["error: --device cuda was asked for but this torch build sees no CUDA GPU; use "
                                    "--device cpu (every process then runs on the CPU)"], result.stderr[-4000:]
    assert "AttributeError" not in result.stderr and "_cuda_setDevice" not in result.stderr
    _assert_nothing_written(tmp_path)


def test_a_bad_input_everywhere_reads_as_in_a_single_run(tiny_model_with_detector, media_dir, tmp_path):
    flags = _flags(tiny_model_with_detector, media_dir, tmp_path, "fixed")
    flags[flags.index("--reference_image_path") + 1] = str(tmp_path / "nope.png")
    result = torchrun(2, [str(FAULTS), "none", "-1", "--", *flags[: flags.index("--dump_dir")]], cwd=tmp_path)
    assert result.returncode != 0
    assert result.error_lines() == [f"error: reference image {tmp_path / 'nope.png'} does not exist; check "
                                    "--reference_image_path"], result.stderr[-4000:]
    assert "loading networks" not in result.stderr
    _assert_nothing_written(tmp_path)
