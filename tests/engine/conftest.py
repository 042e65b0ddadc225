"""Fixtures shared by the engine tests."""
import pytest


@pytest.fixture(scope="module")
def models():
    """The real-face judge's dlib models (engine.judge); the test is skipped without the judge extra.
    (test_engine_attributes.py has its own ``models``: the 68-point shape predictor.)"""
    pytest.importorskip("dlib")
    from engine import judge as J
    try:
        return J.find_models()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"judge models unavailable: {e}")
