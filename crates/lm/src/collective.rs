//! Data-parallel gradients over several devices with burn-collective's all-reduce (feature `collective`).
//!
//! One peer per device, each on a thread of its own: peer `k` copies the weights to device `k`, runs forward
//! and backward on shard `k` of the batch through burn autodiff, and all-reduces (sums) every parameter's
//! gradient with the other peers through [`burn_collective::all_reduce`]. Every peer ends with the same summed
//! gradients, on its own device. Since each shard's loss is divided by the whole batch's weight, the sum is the
//! gradient of the whole batch's mean loss: what one device computes on the same global batch, up to the f32
//! summation order inside the kernels (tested below).
//!
//! burn-collective is generic over `Backend` (its own tests run on burn-flex), so this runs on the CPU
//! backends too, with several peers on the one CPU device. burn's other multi-device path, the
//! `distributed` feature (`burn_backend::distributed::DistributedBackend`, gradients all-reduced during the
//! backward pass), is implemented only by the cubecl backends, over NCCL (`burn-cubecl`'s
//! `ops/distributed.rs`, cubecl-cuda's `all_reduce`); burn-flex and burn-ndarray do not implement it and
//! its default `all_reduce` is `unimplemented!()`, so it cannot be tested without GPUs.
//!
//! burn-collective keeps one collective group per backend type in the process (a global server), so
//! [`data_parallel_grads`] holds a process-wide lock: two groups never interleave their registrations.

use crate::Qwen2;
use crate::data::Batch;
use crate::train::shard_grads;
use anyhow::{Result, anyhow};
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective,
    register,
};
use std::sync::Mutex;

/// One collective group at a time in this process (burn-collective's server is per backend type).
static GROUP: Mutex<()> = Mutex::new(());

/// The weights of `model` on `device`, as fresh autodiff leaves (a data-parallel replica).
pub fn replica<B: AutodiffBackend>(model: &Qwen2<B>, device: &B::Device) -> Qwen2<B> {
    let mut m = model.clone();
    for p in m.params_mut() {
        let w = p.val().inner().to_device(device);
        *p = Param::initialized(p.id, Tensor::from_inner(w).require_grad());
    }
    m
}

/// Sums `tensors` across the peers of the current group (every peer calls this with its tensors in the same
/// order); each peer gets the sums on its own device.
pub fn all_reduce_sum<B: Backend>(
    peer: usize,
    tensors: Vec<Tensor<B, 2>>,
) -> Result<Vec<Tensor<B, 2>>> {
    tensors
        .into_iter()
        .map(|t| {
            let reduced = all_reduce::<B>(
                PeerId::from(peer),
                t.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .map_err(|e| anyhow!("all-reduce on peer {peer}: {e:?}"))?;
            Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
        })
        .collect()
}

/// What each peer of [`data_parallel_grads`] returns: its shard's summed weighted NLL and the all-reduced
/// gradients (canonical parameter order) on its device.
pub struct PeerGrads<B: Backend> {
    pub nll: f64,
    pub grads: Vec<Tensor<B, 2>>,
}

/// Forward and backward of `batch` split over `devices` (one shard of `batch.rows / devices.len()` rows per
/// device), gradients of Σ weighted NLL / `denom` summed across devices with burn-collective's all-reduce
/// (tree strategy). Returns every peer's result in device order; their gradients are equal.
pub fn data_parallel_grads<B: AutodiffBackend>(
    model: &Qwen2<B>,
    batch: &Batch,
    denom: f64,
    document_mask: bool,
    devices: &[B::Device],
) -> Result<Vec<PeerGrads<B::InnerBackend>>> {
    let n = devices.len();
    anyhow::ensure!(n > 0, "data-parallel training needs at least one device");
    anyhow::ensure!(
        batch.rows.is_multiple_of(n),
        "{n} devices must divide the batch's {} rows",
        batch.rows
    );
    let shards = batch.split(n);
    let config = CollectiveConfig::default()
        .with_num_devices(n)
        .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
    let _group = GROUP.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .zip(devices)
            .enumerate()
            .map(|(k, (shard, device))| {
                let config = config.clone();
                s.spawn(move || -> Result<PeerGrads<B::InnerBackend>> {
                    // Collective operations run on the inner (non-autodiff) backend.
                    register::<B::InnerBackend>(PeerId::from(k), device.clone(), config)
                        .map_err(|e| anyhow!("registering peer {k}: {e:?}"))?;
                    let (nll, grads) =
                        shard_grads(&replica(model, device), shard, denom, document_mask, device);
                    let grads = all_reduce_sum(k, grads);
                    finish_collective::<B::InnerBackend>(PeerId::from(k))
                        .map_err(|e| anyhow!("peer {k} leaving the group: {e:?}"))?;
                    Ok(PeerGrads { nll, grads: grads? })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LossOn, PackedData, Packing};
    use crate::train::{TrainConfig, Trainer};
    use crate::{CpuFlex, ModelConfig, Rng};
    use burn::backend::Autodiff;

    type B = Autodiff<CpuFlex>;

    fn values(t: &Tensor<CpuFlex, 2>) -> Vec<f32> {
        t.clone().into_data().to_vec::<f32>().unwrap()
    }

    fn docs(cfg: &ModelConfig, n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| 10 + rng.below(cfg.vocab_size - 10) as u32)
                    .collect()
            })
            .collect()
    }

    /// Largest |a - b| over a parameter, relative to its largest |a|.
    fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
        let scale = a
            .iter()
            .fold(0.0f64, |m, &x| m.max(x.abs() as f64))
            .max(1e-12);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max)
            / scale
    }

    /// Two peers (two replicas on the CPU device, the CPU's stand-in for two GPUs) all-reduce the gradients
    /// of their halves of a batch: both end with the same bits, which are exactly shard 0's gradients plus
    /// shard 1's computed one after the other on one device, and equal one device's single pass over the
    /// whole batch up to f32 summation order (bound: 1e-5 of each parameter's largest gradient entry).
    #[test]
    fn two_devices_all_reduce_to_one_devices_gradients_on_the_same_global_batch() {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let device: burn::tensor::Device<B> = Default::default();
        let model = Qwen2::<B>::init(&cfg, 3, &device);
        let mut data = PackedData::new(
            docs(&cfg, 9, 24, 5),
            LossOn::All,
            Packing::Stream,
            16,
            0,
            false,
        );
        let batch = data.next_batch(4);
        let denom = batch.weights.iter().sum::<f32>() as f64;

        let peers = data_parallel_grads(
            &model,
            &batch,
            denom,
            false,
            &[device.clone(), device.clone()],
        )
        .unwrap();
        assert_eq!(peers.len(), 2);
        let (whole_nll, whole) = shard_grads(&model, &batch, denom, false, &device);
        let halves: Vec<_> = batch
            .split(2)
            .iter()
            .map(|s| shard_grads(&model.fresh_leaves(), s, denom, false, &device))
            .collect();
        let names = Qwen2::<B>::param_shapes(&cfg);
        assert_eq!(peers[0].grads.len(), names.len());
        for (i, (name, _)) in names.iter().enumerate() {
            let (p0, p1) = (values(&peers[0].grads[i]), values(&peers[1].grads[i]));
            assert_eq!(p0, p1, "{name}: the peers disagree");
            let summed = values(&(halves[0].1[i].clone() + halves[1].1[i].clone()));
            assert_eq!(p0, summed, "{name}: not the sum of the shards' gradients");
            let rel = rel_diff(&values(&whole[i]), &p0);
            assert!(rel <= 1e-5, "{name}: {rel:e} from the one-device gradient");
        }
        let nll = peers[0].nll + peers[1].nll;
        assert!(
            (nll - whole_nll).abs() <= 1e-5 * whole_nll,
            "{nll} vs {whole_nll}"
        );
    }

    fn trainer(
        cfg: &ModelConfig,
        batch_size: usize,
        grad_accum: usize,
        devices: usize,
    ) -> Trainer<B> {
        let device: burn::tensor::Device<B> = Default::default();
        let tc = TrainConfig {
            seq_len: 16,
            batch_size,
            grad_accum,
            token_budget: 3 * 4 * 16,
            lr: 1e-2,
            min_lr: 1e-2,
            warmup_frac: 0.0,
            ..Default::default()
        };
        let data = PackedData::new(
            docs(cfg, 20, 24, 7),
            LossOn::All,
            Packing::Stream,
            16,
            0,
            false,
        );
        Trainer::new(
            Qwen2::init(cfg, 1, &device),
            cfg.clone(),
            tc,
            data,
            device.clone(),
        )
        .on_devices(vec![device; devices])
    }

    fn weights(t: &Trainer<B>) -> Vec<Vec<f32>> {
        t.model
            .params()
            .iter()
            .map(|p| values(&p.val().inner()))
            .collect()
    }

    /// Three optimizer steps on two devices (global batch of 4 rows, 2 per device) give the same bits as one
    /// device taking the same 4 rows as two micro-batches of 2 (every token weighs 1, so both divide by the
    /// same total): the same gradients, hence the same clipping and AdamW updates. And one device's single
    /// pass over 4 rows (the host gradients of the CPU trainer) agrees up to f32 summation order.
    #[test]
    fn a_trainer_on_two_devices_takes_one_devices_steps() {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let mut two = trainer(&cfg, 4, 1, 2);
        let mut one = trainer(&cfg, 2, 2, 1);
        let mut host = trainer(&cfg, 4, 1, 1).on_devices(vec![]);
        for step in 1..=3 {
            let (a, b) = (two.step(), one.step());
            assert_eq!(a.grad_norm, b.grad_norm, "step {step}");
            assert!(
                (a.loss - b.loss).abs() <= 1e-12 * b.loss,
                "step {step}: {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(weights(&two), weights(&one), "step {step}");
            if step == 1 {
                // From the same weights (later steps start from weights that differ by rounding).
                let c = host.step();
                assert!(
                    (a.loss - c.loss).abs() <= 1e-5 * c.loss,
                    "{} vs {}",
                    a.loss,
                    c.loss
                );
                let rel = (a.grad_norm - c.grad_norm).abs() / c.grad_norm;
                assert!(rel <= 1e-4, "grad norm {} vs {}", a.grad_norm, c.grad_norm);
            }
        }
    }
}
