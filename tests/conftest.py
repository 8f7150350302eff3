import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


class DictDataset(torch.utils.data.Dataset):
    """A list of {"pixel_values", "labels"} examples, as an image-classification dataset yields them."""

    def __init__(self, pixels, labels, pixel_key="pixel_values", label_key="labels"):
        self.pixels, self.labels, self.pixel_key, self.label_key = pixels, labels, pixel_key, label_key

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {self.pixel_key: self.pixels[i], self.label_key: self.labels[i]}


def digits_tensors(size=16, channels=3, n=None):
    """sklearn digits as pixels in [0, 1], upsampled to `size` and repeated to `channels` channels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).repeat(1, channels, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y


@pytest.fixture(scope="session")
def digits16():
    return digits_tensors(16, 3)


def tiny_vit(num_labels=10, image_size=16, seed=0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    return ViTForImageClassification(config)


def tiny_timm(num_classes=10, seed=0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)


class SmallCNN(torch.nn.Module):
    """A 2-conv CNN returning a plain logits tensor, like a timm model."""

    def __init__(self, channels=3, num_classes=10):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="session")
def trained_cnn(digits16):
    """A SmallCNN trained cleanly on digits for a few epochs (accurate, not robust)."""
    x, y = digits16
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    acc = (model(x).argmax(-1) == y).float().mean().item()
    assert acc > 0.9, acc
    return model


def np_seed():
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: faster, and immune to OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
