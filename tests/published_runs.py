"""How each paper preset's published run trained: plain data, one `Fact` (value and where it is read) per key.

For every preset in sweeps/experiment/ (bench_scaling aside), `RUNS[preset]` says what the published code did, read
from the code at the commit that produced the cited number (the code wins over the paper where they differ).
Keys named `train.*` / `optim.*` are the trainer and optimizer settings that reproduce it (some, such as
`train.schedule_steps` or `train.eval_every_steps`, are keys the trainer does not have yet); the others describe the
run:

- `code`: repository, commit, entry script and config
- `data`: the dataset the published number was obtained on, and its split sizes
- `drop_last`: whether the training loader drops the last partial batch
- `steps_per_epoch`: optimizer steps per pass over the training split
- `train.epochs` / `train.max_steps`: where the run stops, after this many epochs or this many optimizer steps
  (None: the other one decides)
- `steps_run`: optimizer steps the run makes
- `train.schedule`: `cosine` (HF `get_cosine_schedule_with_warmup`: linear warm-up, then 0.5 (1 + cos(pi p)), p the
  progress after the warm-up, NOT clamped: past its end the factor rises again; torch's `CosineAnnealingLR(T_max)`
  stepped per step is the same curve without warm-up, up to T_max) or `rsqrt` (LRA's `constant * linear_warmup *
  rsqrt_decay`)
- `train.schedule_steps`: the schedule's length in steps (its `num_training_steps` / `T_max`)
- `train.warmup_steps`: linear warm-up steps
- `lr_factor_at_end`: the schedule's factor at the run's last step (0-based step `steps_run - 1`)
- `train.eval_every_steps`: evaluate every this many steps (None: at the end of every epoch)
- `eval`: which splits are evaluated when
- `train.early_stop_patience_steps` / `train.early_stop_start_step`: early stopping (None: none)
- `selection`: which state the reported test number belongs to
- `optim.*`: optimizer, peak learning rate, weight decay, betas, eps, weight-decay exemptions (`decay_exempt`)
- `train.grad_clip`: max global gradient norm (0: none)
- `train.precision` / `train.tf32`: fp32 (no AMP) or not, and whether float32 matmuls may use TF32

Commits: state-spaces/s4 v3.0.0 = ab287c6 (2022-08-03), ctlllll/SGConv preview = 0c2b3ab (2022-12-07),
thjashin/multires-conv 828089f (2023-10-11), google-research/long-range-arena cd31e5c (2022-09-14),
EvanZhuang/wavspa 0610f76 (2023-11-15). PyTorch-Lightning defaults are those of 1.5.10 (pinned by s4 v3's
requirements.txt): one validation per epoch (`check_val_every_n_epoch=1`), `ModelCheckpoint` improving only on a
strictly better value (`torch.gt` for mode max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str


S4 = "state-spaces/s4@ab287c6 (v3.0.0)"
SG = "ctlllll/SGConv@0c2b3ab (branch preview)"
MR = "thjashin/multires-conv@828089f"
LRA = "google-research/long-range-arena@cd31e5c"
WS = "EvanZhuang/wavspa@0610f76"

LISTOPS_RELEASE = {"train": 96_000, "val": 2_000, "test": 2_000}
LISTOPS_DATA = "LRA release lra_release/listops-1000/basic_{train,val,test}.tsv"


def hf_cosine(step: int, total: int, warmup: int) -> float:
    """transformers.get_cosine_schedule_with_warmup's factor (num_cycles 0.5), unclamped as published."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def steps_per_epoch(n: int, batch: int, drop_last: bool) -> int:
    return n // batch if drop_last else -(-n // batch)


# ----------------------------------------------------------------------------------------------------------------
# state-spaces/s4 v3.0.0 (S4, S4D) and SGConv's preview branch (the same codebase, Dec 2022)

def _s4_codebase(code: str, repo: str) -> dict[str, Fact]:
    """What train.py and the default configs of the S4 codebase fix for every experiment."""
    return {
        "drop_last": Fact(True, f"{repo} configs/loader/default.yaml:4 (drop_last: True; also for val/test loaders, "
                                "train.py _eval_dataloaders passes the same loader args)"),
        "train.schedule": Fact("cosine", f"{repo} configs/scheduler/cosine_warmup.yaml:3-6 "
                                         "(transformers.get_cosine_schedule_with_warmup, interval: step)"),
        "train.warmup_steps": Fact(1000, f"{repo} configs/scheduler/cosine_warmup.yaml:7 (num_warmup_steps, not "
                                         "overridden by the experiment)"),
        "train.eval_every_steps": Fact(None, "PyTorch-Lightning 1.5.10 default: validation at the end of every epoch"),
        "eval": Fact("val and test every epoch (train.py _eval_dataloaders: val + test loaders), drop_last too; "
                     "train.test=false: no separate test run; the number is read from the logged test metric",
                     f"{repo} train.py:562-585, configs/config.yaml train.test"),
        "train.early_stop_patience_steps": Fact(None, f"{repo} configs/callbacks/checkpoint.yaml:15-20 "
                                                      "(commented out)"),
        "train.early_stop_start_step": Fact(None, "no early stopping"),
        "selection": Fact("best val/accuracy epoch (ModelCheckpoint monitor val/accuracy, mode max, strict: the "
                          "earliest of tied epochs)", f"{repo} configs/callbacks/checkpoint.yaml:3-5, "
                                                      "configs/pipeline/*.yaml train.monitor"),
        "optim.optimizer": Fact("adamw", f"{repo} configs/optimizer/adamw.yaml (torch.optim.AdamW)"),
        "optim.betas": Fact([0.9, 0.999], f"{repo} configs/optimizer/adamw.yaml sets lr and weight_decay only: "
                                          "torch defaults"),
        "optim.eps": Fact(1e-8, "torch.optim.AdamW default"),
        "optim.decay_exempt": Fact("none", f"{repo} train.py:456-457: add_optimizer_hooks runs only if "
                                           "train.optimizer_param_grouping is set; configs/config.yaml sets none. "
                                           "Kernel tensors keep their _optim (tests/golden/param_groups.json)"),
        "train.grad_clip": Fact(0.0, f"{repo} configs/trainer/default.yaml:5 (gradient_clip_val: 0.0)"),
        "train.precision": Fact("fp32", "configs/trainer/default.yaml sets no precision: Lightning's 32"),
        "train.tf32": Fact(True, f"{repo} train.py:33-34 (torch.backends.cuda.matmul.allow_tf32 = True, "
                                 "cudnn too)"),
        "code": Fact(code, repo),
    }


def _s4_listops(model: str, repo: str, config: str) -> dict[str, Fact]:
    spe = steps_per_epoch(96_000, 50, True)
    return _s4_codebase(f"train.py experiment={config} ({model})", repo) | {
        "data": Fact({"source": LISTOPS_DATA, **LISTOPS_RELEASE}, f"{repo} src/dataloaders (ListOps reads the "
                                                                   "release TSVs; <eos> appended, batches padded "
                                                                   "to their longest)"),
        "train.batch_size": Fact(50, f"{repo} configs/experiment/{config}.yaml loader.batch_size"),
        "steps_per_epoch": Fact(spe, "96,000 // 50 (drop_last)"),
        "train.epochs": Fact(40, f"{repo} configs/experiment/{config}.yaml trainer.max_epochs"),
        "train.max_steps": Fact(None, "Lightning stops at max_epochs"),
        "steps_run": Fact(40 * spe, "40 epochs x 1,920"),
        "train.schedule_steps": Fact(80_000, f"{repo} configs/experiment/{config}.yaml scheduler.num_training_steps"),
        "lr_factor_at_end": Fact(hf_cosine(40 * spe - 1, 80_000, 1000), "the run stops before the cosine ends"),
        "optim.lr": Fact(0.01, f"{repo} configs/experiment/{config}.yaml optimizer.lr"),
        "optim.weight_decay": Fact(0.05, f"{repo} configs/experiment/{config}.yaml optimizer.weight_decay"),
    }


def _s4_scifar(model: str) -> dict[str, Fact]:
    spe = steps_per_epoch(45_000, 50, True)
    return _s4_codebase(f"train.py experiment=cifar/s4-cifar ({model})", S4) | {
        "data": Fact({"source": "torchvision CIFAR-10, RGB, train split 45,000 / 5,000 (val_split 0.1, seed 42)",
                      "train": 45_000, "val": 5_000, "test": 10_000}, f"{S4} configs/dataset/cifar.yaml"),
        "train.batch_size": Fact(50, f"{S4} configs/experiment/cifar/s4-cifar.yaml:19"),
        "steps_per_epoch": Fact(spe, "45,000 // 50 (drop_last)"),
        "train.epochs": Fact(200, f"{S4} configs/experiment/cifar/s4-cifar.yaml:26 (trainer.max_epochs)"),
        "train.max_steps": Fact(None, "Lightning stops at max_epochs"),
        "steps_run": Fact(200 * spe, "200 epochs x 900"),
        "train.schedule_steps": Fact(200_000, f"{S4} configs/experiment/cifar/s4-cifar.yaml:29 (num_training_steps; "
                                              "HEAD's file says 180,000 with 900 warm-up steps since 00d11ea, "
                                              "2023-03-05, after the published results)"),
        "lr_factor_at_end": Fact(hf_cosine(200 * spe - 1, 200_000, 1000), "the run stops before the cosine ends"),
        "optim.lr": Fact(0.01, f"{S4} configs/experiment/cifar/s4-cifar.yaml:22"),
        "optim.weight_decay": Fact(0.05, f"{S4} configs/experiment/cifar/s4-cifar.yaml:23"),
    }


def _s4_sc(model: str) -> dict[str, Fact]:
    spe = steps_per_epoch(84_843, 16, True)
    return _s4_codebase(f"train.py experiment=sc/s4-sc ({model})", S4) | {
        "data": Fact({"source": "Speech Commands v0.02, 35 words, official validation_list / testing_list",
                      "train": 84_843, "val": 9_981, "test": 11_005},
                     f"{S4} configs/dataset/sc.yaml (all_classes: true); eval at 16 kHz and 8 kHz "
                     "(configs/pipeline/sc.yaml eval_resolutions [1, 2]); drop_last evaluates 9,968 / 10,992"),
        "train.batch_size": Fact(16, f"{S4} configs/experiment/sc/s4-sc.yaml:25"),
        "steps_per_epoch": Fact(spe, "84,843 // 16 (drop_last)"),
        "train.epochs": Fact(40, f"{S4} configs/experiment/sc/s4-sc.yaml:28 (trainer.max_epochs)"),
        "train.max_steps": Fact(None, "Lightning stops at max_epochs"),
        "steps_run": Fact(40 * spe, "40 epochs x 5,302"),
        "train.schedule_steps": Fact(200_000, f"{S4} configs/experiment/sc/s4-sc.yaml:31 (num_training_steps)"),
        "lr_factor_at_end": Fact(hf_cosine(40 * spe - 1, 200_000, 1000),
                                 "HF's cosine reaches 0 at step 200,000 and rises again for the last 12,080 steps"),
        "optim.lr": Fact(0.01, f"{S4} configs/experiment/sc/s4-sc.yaml:21"),
        "optim.weight_decay": Fact(0.05, f"{S4} configs/experiment/sc/s4-sc.yaml:22"),
    }


def _sgconv_scifar() -> dict[str, Fact]:
    spe = steps_per_epoch(45_000, 50, True)
    config = "configs/experiment/lra/gconv-lra-cifar.yaml"
    return _s4_codebase("train.py experiment=lra/gconv-lra-cifar", SG) | {
        "data": Fact({"source": "torchvision CIFAR-10, grayscale (LRA Image), train split 45,000 / 5,000",
                      "train": 45_000, "val": 5_000, "test": 10_000}, f"{SG} {config} dataset.grayscale: true"),
        "train.batch_size": Fact(50, f"{SG} {config} loader.batch_size"),
        "steps_per_epoch": Fact(spe, "45,000 // 50 (drop_last)"),
        "train.epochs": Fact(200, f"{SG} {config} trainer.max_epochs"),
        "train.max_steps": Fact(None, "Lightning stops at max_epochs"),
        "steps_run": Fact(200 * spe, "200 epochs x 900"),
        "train.schedule_steps": Fact(200_000, f"{SG} {config} scheduler.num_training_steps"),
        "lr_factor_at_end": Fact(hf_cosine(200 * spe - 1, 200_000, 1000), "the run stops before the cosine ends"),
        "optim.lr": Fact(0.01, f"{SG} {config} optimizer.lr"),
        "optim.weight_decay": Fact(0.05, f"{SG} {config} optimizer.weight_decay"),
        "train.precision": Fact("fp32", f"{SG} configs/trainer/default.yaml sets no precision: Lightning's 32"),
    }


# ----------------------------------------------------------------------------------------------------------------
# thjashin/multires-conv: classification.py / autoregressive.py, one global batch over the GPUs of the script

def _multires(script: str, file: str, data: Fact, batch: int, drop_last: bool, epochs: int, warmup_epochs: int,
              lr: float, weight_decay: float, optimizer: str = "adamw",
              selection: str = "best val accuracy epoch (val_acc >= best: the latest of tied epochs), its test",
              ) -> dict[str, Fact]:
    n_train = data.value["train"]
    spe = None if n_train is None else steps_per_epoch(n_train, batch, drop_last)
    total = None if spe is None else epochs * spe
    warmup = None if spe is None else warmup_epochs * spe
    loop = f"{MR} {file}"
    return {
        "code": Fact(f"{file} as in scripts/{script}", MR),
        "data": data,
        "train.batch_size": Fact(batch, f"{MR} scripts/{script} --batch_size (global: per_device = batch // "
                                        f"world_size, {file}; DistributedSampler, shuffle)"),
        "drop_last": Fact(drop_last, f"{loop} train DataLoader ({'drop_last=True' if drop_last else 'default False'})"),
        "steps_per_epoch": Fact(spe, f"train size / {batch} ({'floor' if drop_last else 'ceil'})"),
        "train.epochs": Fact(epochs, f"{MR} scripts/{script} --epochs"),
        "train.max_steps": Fact(None, "the loop runs the epochs"),
        "steps_run": Fact(total, "epochs x steps_per_epoch"),
        "train.schedule": Fact("cosine", f"{loop} setup_optimizer: HF's warm-up + cosine (a copy in utils.py:287-320, "
                                         "which crashes after the warm-up: math is not imported) if --warmup > 0, "
                                         "else CosineAnnealingLR(T_max = the run's steps): the same curve"),
        "train.schedule_steps": Fact(total, f"{loop} setup_optimizer: epochs * len(trainloader)"),
        "train.warmup_steps": Fact(warmup, f"{MR} scripts/{script} --warmup (epochs) x len(trainloader)"),
        "lr_factor_at_end": Fact(hf_cosine(epochs - 1, epochs, warmup_epochs) if total is None
                                 else hf_cosine(total - 1, total, warmup), "the schedule ends with the run"),
        "train.eval_every_steps": Fact(None, f"{loop}: val and test after every epoch"),
        "eval": Fact("val and test every epoch (drop_last False)", loop),
        "train.early_stop_patience_steps": Fact(None, "no early stopping"),
        "train.early_stop_start_step": Fact(None, "no early stopping"),
        "selection": Fact(selection, loop),
        "optim.optimizer": Fact(optimizer, f"{loop} setup_optimizer"),
        "optim.lr": Fact(lr, f"{MR} scripts/{script} --lr"),
        "optim.weight_decay": Fact(weight_decay, f"{MR} scripts/{script} --weight_decay (CLI default 0.01) or, "
                                                 "for Adam, none"),
        "optim.betas": Fact([0.9, 0.999], "torch defaults"),
        "optim.eps": Fact(1e-8, "torch defaults"),
        "optim.decay_exempt": Fact("none", f"{loop} setup_optimizer: model.parameters() in one group"),
        "train.grad_clip": Fact(0.0, f"{loop}: no clipping"),
        "train.precision": Fact("fp32", f"{loop}: no autocast"),
        "train.tf32": Fact(True, f"{loop}:{16 if file == 'autoregressive.py' else 15} "
                                 "(torch.backends.cuda.matmul.allow_tf32 = True)"),
    }


# ----------------------------------------------------------------------------------------------------------------
# JAX/Flax: the LRA Transformer and WavSpA, step-based loops over a repeated tf.data pipeline

def _lra_listops(repo: str, code: str, batch: int, steps: int, lr_source: str) -> dict[str, Fact]:
    return {
        "code": Fact(code, repo),
        "data": Fact({"source": LISTOPS_DATA, **LISTOPS_RELEASE},
                     f"{repo} lra_benchmarks/listops/input_pipeline.py (no <eos>, every batch padded to 2,000)"),
        "train.batch_size": Fact(batch, code),
        "drop_last": Fact(False, f"{repo} input_pipeline.py padded_batch without drop_remainder (96,000 divides "
                                 "evenly); train shuffle buffer 1,024 only, repeated"),
        "steps_per_epoch": Fact(steps_per_epoch(96_000, batch, False), f"96,000 / {batch}"),
        "train.epochs": Fact(None, "step-based loop"),
        "train.max_steps": Fact(steps, code),
        "train.schedule": Fact("rsqrt", f"{lr_source}: create_learning_rate_scheduler(base_learning_rate=0.05) with "
                                        "its defaults 'constant * linear_warmup * rsqrt_decay', warmup_steps 1000 "
                                        "(config.factors and config.warmup are never passed)"),
        "train.schedule_steps": Fact(None, "rsqrt has no end"),
        "train.warmup_steps": Fact(1000, f"{repo} lra_benchmarks/utils/train_utils.py create_learning_rate_scheduler "
                                         "default warmup_steps"),
        "optim.lr": Fact(0.05 / math.sqrt(1000), "lr(s) = 0.05 min(1, s/1000) / sqrt(max(s, 1000)): peak "
                                                 "0.05/sqrt(1000) at step 1000 (train.schedule=rsqrt's peak lr)"),
        "optim.weight_decay": Fact(0.1, f"{repo} lra_benchmarks/listops/configs/base_listops_config.py:27"),
        "optim.optimizer": Fact("adamw", f"{lr_source}: decoupled weight decay scaled by the lr, as torch AdamW"),
        "optim.betas": Fact([0.9, 0.98], lr_source),
        "optim.eps": Fact(1e-9, lr_source),
        "optim.decay_exempt": Fact("none", "every leaf of the parameter tree (tests/golden/param_groups.json)"),
        "train.grad_clip": Fact(0.0, "no clipping in the train step"),
        "train.precision": Fact("fp32", "float32 parameters and activations (no dtype set)"),
    }


def _wavspa(wavelet: str) -> dict[str, Fact]:
    loop = f"{WS} lra_benchmarks/listops/train_best.py"
    config = f"{WS} lra_benchmarks/listops/configs/wavspa-exp0.py"
    override = "" if wavelet == "db2" else f" --override_wavelet_basis {wavelet} (presumably; train_best.py:59-60)"
    return _lra_listops(WS, f"train_best.py --config wavspa-exp0.py{override}", 400, 80_000, f"{loop}:270-276") | {
        "steps_run": Fact("up to 80,000: early stopping", f"{loop}:346-407"),
        "lr_factor_at_end": Fact(math.sqrt(1000 / 79_999), "rsqrt at the last step if nothing stops the run"),
        "train.eval_every_steps": Fact(100, f"{config}:29 (eval_frequency); {loop}:362 evaluates when the 0-based "
                                            "step index is a multiple of 100 and > 0, i.e. after 101, 201, ... "
                                            "updates"),
        "eval": Fact("the whole val split (num_eval_steps 99999) at each evaluation; the test split once, at the end",
                     f"{loop}:387, 418-425"),
        "train.early_stop_patience_steps": Fact(8_000, f"{loop}:346 (int(0.1 * num_train_steps)): the loop ends at "
                                                       "the first step whose count of steps since the last "
                                                       "improving evaluation (counted from step 0, reset on an "
                                                       "improvement) exceeds 8,000, i.e. 8,001 steps after it"),
        "train.early_stop_start_step": Fact(5_000, f"{loop}:348, 405 (and step > 5000): no stop before step "
                                                   "index 5,001; with a patience of 8,000 counted from step 0 it "
                                                   "never binds"),
        "selection": Fact("the best val accuracy checkpoint (improving = strictly greater, so the earliest of ties; "
                          "saved on every improvement, flax keep=1) is restored and the full test split evaluated",
                          f"{loop}:396-404, 418-425"),
        "train.tf32": Fact(True, f"{WS} requirements.txt: jaxlib 0.3.10+cuda11 (GPU); JAX's default matmul "
                                 "precision lets float32 dots use TF32 on Ampere and later GPUs"),
    }


RUNS: dict[str, dict[str, Fact]] = {
    "s4_listops": _s4_listops("S4", S4, "lra/s4-lra-listops"),
    "s4d_listops": _s4_listops("S4D: model.layer.mode=diag model.layer.measure=diag-lin", S4, "lra/s4-lra-listops"),
    "sgconv_listops": _s4_listops("SGConv", SG, "lra/gconv-lra-listops"),
    "s4_scifar": _s4_scifar("S4"),
    "s4d_scifar": _s4_scifar("S4D: model.layer.mode=diag model.layer.measure=diag-lin"),
    "sgconv_scifar": _sgconv_scifar(),
    "s4_speech_commands": _s4_sc("S4"),
    "s4d_speech_commands": _s4_sc("S4D: model.layer.mode=diag model.layer.measure=diag-lin"),
    "multires_listops": _multires(
        "listops.sh", "classification.py",
        Fact({"source": LISTOPS_DATA, **LISTOPS_RELEASE}, f"{MR} dataloaders/lra.py (the S4 ListOps loader: "
                                                          "<eos>, padded to 2,048 by the train loop)"),
        batch=50, drop_last=False, epochs=100, warmup_epochs=1, lr=0.003, weight_decay=0.03),
    "multires_scifar": _multires(
        "seq_cifar.sh", "classification.py",
        Fact({"source": "torchvision CIFAR-10, RGB, random_split 45,000 / 5,000 (seed 42)", "train": 45_000,
              "val": 5_000, "test": 10_000}, f"{MR} classification.py:310, utils.py:30-37"),
        batch=50, drop_last=False, epochs=250, warmup_epochs=0, lr=0.0045, weight_decay=0.01),
    "multires_ablation": _multires(
        "seq_cifar.sh", "classification.py",
        Fact({"source": "torchvision CIFAR-10, RGB, random_split 45,000 / 5,000 (seed 42)", "train": 45_000,
              "val": 5_000, "test": 10_000}, f"{MR} classification.py:310 (no published ablation script: the "
                                             "baseline is seq_cifar.sh)"),
        batch=50, drop_last=False, epochs=250, warmup_epochs=0, lr=0.0045, weight_decay=0.01),
    "multires_cifar_bpd": _multires(
        "autoregressive.sh", "autoregressive.py",
        Fact({"source": "torchvision CIFAR-10, random_split 48,000 / 2,000 (val_split 0.04, seed 42)",
              "train": 48_000, "val": 2_000, "test": 10_000}, f"{MR} autoregressive.py:228"),
        batch=64, drop_last=True, epochs=250, warmup_epochs=0, lr=0.001, weight_decay=0.0,
        optimizer="adam", selection="best val bits/dim (val_loss <= best: the latest of tied epochs), its test "
                                    "(--test_every 1)"),
}
RUNS["multires_ptbxl"] = _multires(
    "ptbxl.sh", "classification.py",
    Fact({"source": "PTB-XL 100 Hz, records with a label of the set; folds 1-8 / 9 / 10", "train": None, "val": None,
          "test": None}, f"{MR} dataloaders/ptbxl.py:79-87, 213-216 (sizes depend on the release; not computed here)"),
    batch=50, drop_last=False, epochs=100, warmup_epochs=5, lr=0.0045, weight_decay=0.06,
    selection="best val macro AUROC epoch (>=: the latest of tied epochs), its test")
RUNS["transformer_lra_listops"] = _lra_listops(
    LRA, "lra_benchmarks/listops/train.py --config configs/transformer_base.py, then --test_only", 32, 5_000,
    f"{LRA} lra_benchmarks/listops/train.py:72-80, 216-217") | {
    "steps_run": Fact(5_000, f"{LRA} lra_benchmarks/listops/configs/base_listops_config.py:24"),
    "lr_factor_at_end": Fact(math.sqrt(1000 / 4_999), "rsqrt at the last step"),
    "train.eval_every_steps": Fact(50, f"{LRA} base_listops_config.py:23; train.py:274 (0-based step index a "
                                       "multiple of 50 and > 0)"),
    "eval": Fact("the whole val split every 50 steps (logged only); the test split in a separate --test_only run",
                 f"{LRA} train.py:249-254, 296"),
    "train.early_stop_patience_steps": Fact(None, "no early stopping"),
    "train.early_stop_start_step": Fact(None, "no early stopping"),
    "selection": Fact("the last state: --test_only restores the latest checkpoint, written at the last step "
                      "(step == num_train_steps - 1; checkpoint_freq 10,000 never fires)", f"{LRA} train.py:207-211, "
                                                                                          "266-271"),
    "train.tf32": Fact(None, "run on 4x4 TPU v3 (LRA paper, arXiv 2011.04006, section 3): JAX's default TPU "
                             "precision computes float32 dots in one bfloat16 pass; on a GPU it would allow TF32"),
}
RUNS |= {f"wavspa_{name}_listops": _wavspa(wavelet) for name, wavelet in
         (("ada", "db2"), ("ortho", "ortho"), ("lift", "lift"))}
