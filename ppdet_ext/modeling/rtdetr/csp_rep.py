"""Conv building blocks of the CCFM fusion: Conv-BN-act, RepVGG block and CSP-Rep layer.

``ExtRepVggBlock.convert_to_deploy()`` folds its two conv+BN branches into one 3x3 conv,
so the deployed graph has a single conv per block (any engine: fewer ops, same output).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet_ext.registry import register

__all__ = ['ExtConvNormAct', 'ExtRepVggBlock', 'ExtCSPRepLayer', 'get_activation']


def get_activation(name):
    """``nn.Layer`` for an activation name (``silu``, ``relu``, ``gelu``) or ``None``."""
    if name is None:
        return nn.Identity()
    table = {'silu': nn.Silu, 'relu': nn.ReLU, 'gelu': nn.GELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}")
    return table[name]()


@register
class ExtConvNormAct(nn.Layer):
    """Conv2D (no bias) + BatchNorm + activation; padding keeps ``ceil(H / stride)``.

    Sub-layers are named ``conv2d``/``bn`` on purpose: ppdet's ResNet names its own
    ``conv``/``norm``, and ppdet's OptimizerBuilder groups parameters by name substring,
    so the configs can tell backbone parameters (``.conv.``/``.norm.``) from ours.
    """

    def __init__(self, ch_in, ch_out, kernel_size, stride=1, groups=1, act=None):
        super().__init__()
        self.conv2d = nn.Conv2D(ch_in, ch_out, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(ch_out)
        self.act = get_activation(act)

    def forward(self, x):
        return self.act(self.bn(self.conv2d(x)))


def _fuse_conv_bn(conv, norm):
    """(kernel, bias) of ``norm(conv(x))`` for a bias-free conv and an eval-mode BN."""
    std = paddle.sqrt(norm._variance + norm._epsilon)
    scale = norm.weight / std
    kernel = conv.weight * scale.reshape([-1, 1, 1, 1])
    bias = norm.bias - norm._mean * scale
    return kernel, bias


@register
class ExtRepVggBlock(nn.Layer):
    """3x3 conv-BN plus 1x1 conv-BN, summed, then activation (RepVGG without identity)."""

    def __init__(self, ch_in, ch_out, act='relu'):
        super().__init__()
        self.ch_in, self.ch_out = ch_in, ch_out
        self.conv1 = ExtConvNormAct(ch_in, ch_out, 3, act=None)
        self.conv2 = ExtConvNormAct(ch_in, ch_out, 1, act=None)
        self.act = get_activation(act)
        self.fused = None

    def forward(self, x):
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @paddle.no_grad()
    def convert_to_deploy(self):
        """Fold both branches into one 3x3 conv with bias (uses BN running stats)."""
        if self.fused is not None:
            return
        k3, b3 = _fuse_conv_bn(self.conv1.conv2d, self.conv1.bn)
        k1, b1 = _fuse_conv_bn(self.conv2.conv2d, self.conv2.bn)
        self.fused = nn.Conv2D(self.ch_in, self.ch_out, 3, padding=1)
        self.fused.weight.set_value(k3 + F.pad(k1, [1, 1, 1, 1]))
        self.fused.bias.set_value(b3 + b1)
        del self.conv1
        del self.conv2


@register
class ExtCSPRepLayer(nn.Layer):
    """CSP layer: two 1x1 branches, ``num_blocks`` RepVGG blocks on one, summed, 1x1 out.

    Args:
        ch_in (int): input channels (the concatenation of two fused maps).
        ch_out (int): output channels.
        num_blocks (int): RepVGG blocks on the main branch.
        expansion (float): hidden channels = ``int(ch_out * expansion)``.
        act (str): activation of the 1x1 convs and the blocks.
    """

    def __init__(self, ch_in, ch_out, num_blocks=3, expansion=1.0, act='silu'):
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ExtConvNormAct(ch_in, hidden, 1, act=act)
        self.conv2 = ExtConvNormAct(ch_in, hidden, 1, act=act)
        self.bottlenecks = nn.Sequential(
            *[ExtRepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = (ExtConvNormAct(hidden, ch_out, 1, act=act)
                      if hidden != ch_out else nn.Identity())

    def forward(self, x):
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))
