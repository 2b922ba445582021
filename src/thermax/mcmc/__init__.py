"""Markov-chain Monte Carlo: neural MCMC with a trained model as proposal, and HMC."""

from ._hmc import HMC, HMCState, adapt_step_size, hmc_init, hmc_step
from ._neural import (
    NeuralMCMCResult,
    NeuralMCMCState,
    neural_mcmc,
    neural_mcmc_init,
    neural_mcmc_step,
)

__all__ = ["HMC", "HMCState", "NeuralMCMCResult", "NeuralMCMCState", "adapt_step_size",
           "hmc_init", "hmc_step", "neural_mcmc", "neural_mcmc_init", "neural_mcmc_step"]
