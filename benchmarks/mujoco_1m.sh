#!/usr/bin/env bash
# Wu et al. 2017, Figure 3 / Table 2 setting: the final 100-episode training mean after 1M steps on the paper's eight
# MuJoCo tasks (v5), ACKTR's packaged entries against rl-zoo3's A2C entries (their -v4 entries; rl-zoo3 has no A2C entry
# for InvertedPendulum, InvertedDoublePendulum and Reacher, which take its MuJoCo defaults, the HalfCheetah-v4 entry:
# normalised observations and rewards, SB3's A2C defaults otherwise). Each run is checkpointed every 100k steps and
# resumes from its last checkpoint when the script is started again on the same machine.
# SMAC runs its packaged entries (8 envs x 125 steps since 2026-12-05, label smac).
# The checkpoints live in logs/, which a fresh clone does not have: a run resumes only on the machine that started it.
# Results: benchmarks/results/sample_efficiency/README.md, "MuJoCo" (ACKTR: acktr-envs8, acktr-tr01, acktr-klt002); the
# table there is printed by `python benchmarks/mujoco_table.py --checkpoint-dir logs/se_checkpoints`.
#
# Usage (from the repository root): bash benchmarks/mujoco_1m.sh ALGO [SEED ...]   (ALGO: acktr, a2c, smac)
set -euo pipefail
cd "$(dirname "$0")/.."
ALGO=$1
shift
SEEDS=${*:-10}
OUT=${OUT:-benchmarks/results/sample_efficiency/mujoco_1m.json}
CHECKPOINTS=${CHECKPOINTS:-logs/se_checkpoints}
export OMP_NUM_THREADS=1
for ENV in InvertedPendulum-v5 InvertedDoublePendulum-v5 Reacher-v5 Swimmer-v5 Hopper-v5 HalfCheetah-v5 Walker2d-v5 Ant-v5; do
    ENTRY=()
    if [ "$ALGO" = a2c ] && [[ "$ENV" =~ ^(InvertedPendulum|InvertedDoublePendulum|Reacher)- ]]; then
        ENTRY=(--entry a2c:HalfCheetah-v4)
    fi
    if [ "$ALGO" = acktr ]; then
        # the entry's own values, repeated to keep the labels of the runs made before each change: 8 envs x 256 steps
        # since 2026-12-05 (label envs8); the larger trust region of InvertedDoublePendulum and Swimmer since 2026-12-05
        # (label tr01); the KL-adaptive step size of HalfCheetah and Walker2d since 2026-12-05 (label klt002)
        ENTRY=(--set acktr:n_envs=8 --set acktr:n_steps=256 --label envs8)
        if [ "$ENV" = InvertedDoublePendulum-v5 ] || [ "$ENV" = Swimmer-v5 ]; then
            ENTRY=(--set acktr:kfac_clip=0.01 --set acktr:max_kl=0.01 --label tr01)
        fi
        if [ "$ENV" = HalfCheetah-v5 ] || [ "$ENV" = Walker2d-v5 ]; then
            ENTRY=(--set acktr:kfac_clip=0.01 --set acktr:kl_target=0.002 --label klt002)
        fi
    fi
    nice -n "${NICE:-5}" python benchmarks/sample_efficiency.py --env "$ENV" --algos "$ALGO" --seeds $SEEDS --budget 1000000 \
        "${ENTRY[@]}" --workers 1 --checkpoint-dir "$CHECKPOINTS" --out "$OUT" --resume
done
