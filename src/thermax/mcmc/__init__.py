"""Markov-chain Monte Carlo: neural MCMC with a trained model as proposal, and HMC references."""
