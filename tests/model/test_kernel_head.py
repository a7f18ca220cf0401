"""Kernel head building blocks against hand computations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vknet_model.kernel_head import KernelUpdator, MultiHeadAttention, group_features
from vknet_model.neck import sine_position_encoding


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_kernel_updator_matches_the_gated_update_formula() -> None:
    torch.manual_seed(0)
    c = 4
    updator = KernelUpdator(channels=c)
    f = torch.randn(1, 3, c)  # group features F
    k = torch.randn(1, 3, c)  # kernels K
    # Hand computation with the module's own weights: K -> [P_in, P_out], F -> [X_in, X_out].
    xf = f @ updator.feature_proj.weight.T + updator.feature_proj.bias
    pk = k @ updator.kernel_proj.weight.T + updator.kernel_proj.bias
    x_in, x_out = xf[..., :c], xf[..., c:]
    p_in, p_out = pk[..., :c], pk[..., c:]
    gate = x_in * p_in
    g_f = torch.sigmoid(_layer_norm(gate @ updator.feature_gate.weight.T + updator.feature_gate.bias))
    g_k = torch.sigmoid(_layer_norm(gate @ updator.kernel_gate.weight.T + updator.kernel_gate.bias))
    k_new = g_k * _layer_norm(p_out) + g_f * _layer_norm(x_out)
    expected = torch.relu(_layer_norm(k_new @ updator.out.weight.T + updator.out.bias))
    torch.testing.assert_close(updator(f, k), expected, atol=1e-5, rtol=1e-5)


def test_kernel_updator_ignores_kernels_with_constant_projection() -> None:
    # Kernels reach the output only through their projection: make it constant and they stop mattering.
    torch.manual_seed(1)
    updator = KernelUpdator(channels=4)
    with torch.no_grad():
        updator.kernel_proj.weight[4:].zero_()
        updator.kernel_proj.bias[4:].zero_()
    f = torch.randn(1, 2, 4)
    k1, k2 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    # P_out = 0 so LN(P_out) = 0: only G_F * LN(X_out) remains, and G_F still depends on K through G.
    out1, out2 = updator(f, k1), updator(f, k2)
    assert not torch.allclose(out1, out2)  # gates depend on K
    with torch.no_grad():
        updator.kernel_proj.weight.zero_()
        updator.kernel_proj.bias.fill_(1.0)  # P_in = 1, P_out = 1 -> LN(P_out) = 0 and G independent of K
    torch.testing.assert_close(updator(f, k1), updator(f, k2))


def test_group_features_are_means_under_binarised_masks() -> None:
    features = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]])  # [B=1, C=2, HW=4]
    logits = torch.tensor([[[5.0, 5.0, -5.0, -5.0],     # pixels 0, 1
                            [-1.0, 0.5, 0.5, 2.0],      # pixels 1, 2, 3
                            [-3.0, -3.0, -3.0, -3.0]]])  # empty mask
    out = group_features(logits, features)
    torch.testing.assert_close(out, torch.tensor([[[1.5, 15.0], [3.0, 30.0], [0.0, 0.0]]]))


def test_attention_matches_torch_multi_head_attention() -> None:
    torch.manual_seed(2)
    c, heads = 8, 2
    ours = MultiHeadAttention(channels=c, heads=heads)
    query, memory = torch.randn(2, 5, c), torch.randn(2, 7, c)
    expected, _ = F.multi_head_attention_forward(
        query.transpose(0, 1), memory.transpose(0, 1), memory.transpose(0, 1), c, heads,
        in_proj_weight=torch.cat((ours.q.weight, ours.k.weight, ours.v.weight)),
        in_proj_bias=torch.cat((ours.q.bias, ours.k.bias, ours.v.bias)), bias_k=None, bias_v=None,
        add_zero_attn=False, dropout_p=0.0, out_proj_weight=ours.out.weight, out_proj_bias=ours.out.bias,
        training=False, need_weights=False)
    torch.testing.assert_close(ours(query, memory), expected.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_sine_position_encoding_values() -> None:
    pos = sine_position_encoding(3, 4, 8)
    assert pos.shape == (1, 8, 3, 4)
    # Channel 0 is sin(y_embed / 10000^0) with y_embed = (row + 1) / H * 2 pi; channel 4 the same for x.
    torch.testing.assert_close(pos[0, 0, :, 0], torch.sin(torch.tensor([1.0, 2.0, 3.0]) / 3 * 2 * math.pi))
    torch.testing.assert_close(pos[0, 4, 0, :], torch.sin(torch.tensor([1.0, 2.0, 3.0, 4.0]) / 4 * 2 * math.pi))
    # Channel 1 is the cosine of the same frequency.
    torch.testing.assert_close(pos[0, 1, :, 0], torch.cos(torch.tensor([1.0, 2.0, 3.0]) / 3 * 2 * math.pi))
    assert torch.equal(pos[0, :4, :, 0], pos[0, :4, :, 3])  # the y half does not vary along x
