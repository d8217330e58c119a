"""The Appendix-A GP: recovers a known function and noise, exact LOO, hull test."""

import numpy as np
import pytest

from csstflux.library.gpr import GaussianProcess, condition_gp, fit_gp


def truth(z):
    return np.stack([np.sin(z[:, 0]) + 0.3 * z[:, 1], np.cos(z[:, 2]) * z[:, 0], z[:, 1] ** 2], 1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    x = rng.uniform([5000, 1.0, -2.0], [9000, 5.0, 0.5], (150, 3))
    z = (x - x.mean(0)) / x.std(0)
    y = truth(z) + rng.normal(0, 0.01, (150, 3))
    return x, z, y


@pytest.fixture(scope="module")
def gp(data):
    x, _, y = data
    return fit_gp(x, y, seed=1, restarts=1)


def test_recovers_noise_level(gp):
    assert gp.hyper.sigma_n == pytest.approx(0.01, rel=0.2)
    assert gp.hyper.sigma_f > 0.3 and 0.3 < gp.hyper.length_scale < 10


def test_recovers_smooth_function(gp, data):
    x, _, _ = data
    rng = np.random.default_rng(7)
    # test points well inside the training domain
    xt = rng.uniform([5500, 1.5, -1.7], [8500, 4.5, 0.2], (100, 3))
    zt = (xt - x.mean(0)) / x.std(0)
    mean, std = gp.predict(xt)
    err = mean - truth(zt)
    assert np.sqrt(np.mean(err**2)) < 0.01
    # predictive std is of the right size: most errors inside 3σ (σ includes noise-free only)
    assert np.mean(np.abs(err) < 3 * np.sqrt(std[:, None] ** 2 + gp.hyper.sigma_n**2)) > 0.95


def test_loo_matches_brute_force(gp, data):
    x, _, y = data
    loo = gp.loo_residuals()
    for i in (0, 17, 99):
        keep = np.arange(len(x)) != i
        sub = condition_gp(x[keep], y[keep], gp.hyper, x_mean=gp.x_mean, x_scale=gp.x_scale,
                           y_mean=gp.y_mean)
        pred, _ = sub.predict(x[i:i + 1])
        np.testing.assert_allclose(y[i] - pred[0], loo[i], rtol=1e-6, atol=1e-9)


def test_array_round_trip_and_hull(gp, data):
    x, _, _ = data
    gp2 = GaussianProcess.from_arrays(gp.to_arrays())
    np.testing.assert_array_equal(gp2.predict(x[:5])[0], gp.predict(x[:5])[0])
    inside = gp.in_hull(np.array([[7000, 3.0, -0.7], [20000, 3.0, -0.7], [7000, 3.0, 3.0]]))
    assert inside.tolist() == [True, False, False]


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        fit_gp(np.ones((3, 3)), np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="rows"):
        fit_gp(np.ones((3, 3)), np.ones((4, 2)))


def test_likelihood_matches_scikit_learn(data):
    """Independent implementation: scikit-learn's GPR log marginal likelihood and fit."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    from csstflux.library.gpr import log_marginal_likelihood

    x, z, y = data
    yc = y - y.mean(0)
    kernel = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(1e-3)
    gpr = GaussianProcessRegressor(kernel, alpha=1e-10, optimizer=None).fit(z, yc)
    rng = np.random.default_rng(3)
    for _ in range(4):
        theta = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-8, -3)])
        ours, grad = log_marginal_likelihood(theta, z, yc)
        # scikit-learn orders its log-parameters (constant, length scale, noise) the same way
        ref, ref_grad = gpr.log_marginal_likelihood(theta, eval_gradient=True)
        assert ours == pytest.approx(ref, rel=1e-7)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
    fitted = GaussianProcessRegressor(kernel, alpha=1e-10, n_restarts_optimizer=2,
                                      random_state=0).fit(z, yc)
    theta_sk = fitted.kernel_.theta
    gp = fit_gp(x, y, seed=0, restarts=2)
    ours = log_marginal_likelihood(np.log([gp.hyper.sigma_f**2, gp.hyper.length_scale,
                                           gp.hyper.sigma_n**2]), z, yc)[0]
    assert ours >= fitted.log_marginal_likelihood(theta_sk) - 1e-3
    np.testing.assert_allclose(np.exp(theta_sk / 2)[[0, 2]],
                               [gp.hyper.sigma_f, gp.hyper.sigma_n], rtol=0.02)
