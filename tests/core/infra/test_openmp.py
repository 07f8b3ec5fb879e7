import pytest

from easytune.core.infra.openmp import OPENMP_SPIN_COUNT, default_openmp_wait


def test_openmp_spinning_is_bounded_when_the_environment_says_nothing():
    env = {"PATH": "/bin"}
    default_openmp_wait(env)
    assert env == {"PATH": "/bin", "GOMP_SPINCOUNT": OPENMP_SPIN_COUNT}


@pytest.mark.parametrize("explicit", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"},
                                      {"GOMP_SPINCOUNT": "300000"}])
def test_an_explicit_openmp_wait_setting_wins(explicit):
    env = dict(explicit)
    default_openmp_wait(env)
    assert env == explicit
