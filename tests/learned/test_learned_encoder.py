import pytest
import torch

from learned.encoder import EncoderError, load_encoder
from training.backbones import create_backbone
from training.config import ModelConfig
from training.module import save_backbone


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    torch.manual_seed(0)
    m = create_backbone("tiny", 64, input_size=56)
    save_backbone(m, ModelConfig(backbone="tiny", embedding_size=64, input_size=56), d)
    torch.save(m.state_dict(), d / "arcface_style.pth")
    return d


def test_training_run_dir_and_arcface_pth_give_same_embeddings(saved):
    a = load_encoder(saved)
    b = load_encoder({"arch": "tiny", "checkpoint": str(saved / "arcface_style.pth"), "embedding_size": 64,
                      "input_size": 56})
    x = torch.rand(4, 3, 112, 112) * 2 - 1  # resized to the backbone's 56 px
    ea, eb = a(x), b(x)
    assert ea.shape == (4, 64)
    torch.testing.assert_close(ea.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(ea, eb)
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.backbone.training  # stays in eval mode


def test_encoder_is_differentiable_in_the_images(saved):
    enc = load_encoder(saved)
    x = (torch.rand(2, 3, 56, 56) * 2 - 1).requires_grad_()
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_arch_colon_path_spec(saved):
    with pytest.raises(EncoderError, match="shape mismatch"):  # default embedding_size 512 vs 64
        load_encoder(f"tiny:{saved / 'arcface_style.pth'}")


@pytest.mark.parametrize("spec, msg", [
    ("/does/not/exist", "not found"),
    ("iresnet50:/does/not/exist.pth", "not found"),
    ({"arch": "nope", "checkpoint": "x"}, "unknown backbone"),
    ({"arch": "tiny", "embedding_size": 64, "input_size": 56, "random_init_seed": 1}, "random weights"),
    ({"arch": "tiny", "bogus": 1}, "unknown encoder spec key"),
])
def test_bad_specs_name_the_problem(spec, msg):
    with pytest.raises(EncoderError, match=msg):
        load_encoder(spec)


def test_random_encoder_only_when_allowed():
    spec = {"arch": "tiny", "embedding_size": 32, "input_size": 56, "random_init_seed": 3}
    a, b = load_encoder(spec, allow_random=True), load_encoder(spec, allow_random=True)
    x = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(a(x), b(x))
    assert a.spec["random_init_seed"] == 3


def test_learned_public_api_resolves_lazily():
    import learned

    for name in learned.__all__:
        assert getattr(learned, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        learned.nope  # noqa: B018
