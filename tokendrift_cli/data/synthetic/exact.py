"""Exact statistics of the language: probabilities, conditionals, marginals and entropies.

The automaton is deterministic, so a sequence's log-probability follows a single path, and the
marginals of masked positions given the observed ones come from forward–backward.
"""

from __future__ import annotations

import torch

from tokendrift_cli.data.synthetic.automaton import Automaton

# The oracle's noisy channel: each token is the language's word with probability 1 - epsilon.
CHANNEL_EPSILON = 1e-3


class ExactStatistics(Automaton):
    """What the language says of given sequences, and its entropy, computed exactly on the automaton."""

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """Exact log-probability (nats) of each length-L prefix; -inf where the language cannot produce it."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        state = torch.zeros(flat.shape[0], dtype=torch.long)
        total = torch.zeros(flat.shape[0], dtype=torch.float64)
        for t in range(flat.shape[1]):
            total += torch.log(self.emit[state, flat[:, t]])
            state = self.next_state[state, flat[:, t]]
        return total.reshape(ids.shape[:-1])

    def noisy_log_prob(self, ids: torch.Tensor, epsilon: float) -> torch.Tensor:
        """log p(ids) when each token is the language's word with probability 1 - epsilon, or a
        uniformly random data token otherwise (a noisy channel, marginalised by the forward
        algorithm). Finite for every sequence; a wrong token costs about log(1/epsilon) and the
        automaton keeps tracking the sentence behind it."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        any_word = self.transition[:, : self.num_data_tokens].sum(1) * (epsilon / self.num_data_tokens)  # [S, S]
        alpha = torch.zeros(flat.shape[0], len(self.states), dtype=torch.float64)
        alpha[:, 0] = 1.0
        total = torch.zeros(flat.shape[0], dtype=torch.float64)
        for t in range(flat.shape[1]):
            step = (1 - epsilon) * self.transition[:, flat[:, t], :].permute(1, 0, 2) + any_word
            alpha = torch.bmm(alpha.unsqueeze(1), step).squeeze(1)
            norm = alpha.sum(1)
            total += norm.log()
            alpha = alpha / norm.unsqueeze(1)
        return total.reshape(ids.shape[:-1])

    def accepts(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(self.log_prob(ids))

    def next_word_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """P(x_t = v | x_<t) for every position: [..., L, V]. Rows after an impossible prefix are zero."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        state = torch.zeros(flat.shape[0], dtype=torch.long)
        alive = torch.ones(flat.shape[0], dtype=torch.bool)
        rows = []
        for t in range(flat.shape[1]):
            rows.append(self.emit[state] * alive.unsqueeze(1))
            alive &= self.emit[state, flat[:, t]] > 0
            state = self.next_state[state, flat[:, t]]
        return torch.stack(rows, 1).reshape(*ids.shape, self.vocab_size)

    def marginals(self, ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Exact P(x_t = v | observed positions) for every position: [..., L, V] (float64).
        Observed rows are one-hot; observed tokens the language cannot produce are an error."""
        ids, masked = torch.as_tensor(ids), torch.as_tensor(masked, dtype=torch.bool)
        seen = torch.nn.functional.one_hot(ids, self.vocab_size).to(torch.float64)
        probs, log_evidence = self.posterior(torch.where(masked.unsqueeze(-1), torch.ones_like(seen), seen))
        impossible = torch.isinf(log_evidence.reshape(-1))
        if impossible.any():
            bad = int(torch.nonzero(impossible)[0])
            raise ValueError(f"sequence {bad}: the observed tokens have probability 0 under the language")
        return probs

    def channel_likelihood(self, ids: torch.Tensor, keep: torch.Tensor | float) -> torch.Tensor:
        """P(seeing ids[t] | word v) [..., L, V] for a channel that keeps the word with probability
        `keep` ([...] or a number) and otherwise shows a uniformly random data token: the oracle's
        noisy reading (keep = 1 - epsilon) and DUO's forward process (keep = alpha_t) alike."""
        keep = torch.as_tensor(keep, dtype=torch.float64)
        keep = keep.reshape(*keep.shape, 1, 1)
        seen = torch.nn.functional.one_hot(torch.as_tensor(ids), self.vocab_size).to(torch.float64)
        is_data = torch.ones(self.vocab_size, dtype=torch.float64)
        is_data[self.num_data_tokens:] = 0  # [MASK] is never shown by the channel
        return keep * seen + (1 - keep) * is_data / self.num_data_tokens

    def posterior(
        self, likelihood: torch.Tensor, present: torch.Tensor | None = None, own: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """P(word at t = v | evidence) [..., L, V] and log P(evidence) [...], for evidence that bears
        on each position alone given the words: likelihood[..., t, v] = P(what is seen at t | word v)
        (a masked position: all ones; an observed one: one-hot; a noisy one: `channel_likelihood`).
        own=False leaves each position's own evidence out: P(word at t = v | what is seen elsewhere).

        Forward–backward over the automaton in float64, rescaled at every step. Positions where
        `present` is False (left padding) are skipped: no word, no step of the automaton; their
        rows are zero. Where no sequence of the language explains the evidence, log P = -inf and
        the rows are zero.
        """
        shape = likelihood.shape
        lik = likelihood.reshape(-1, shape[-2], shape[-1]).to(torch.float64)
        batch, length, _ = lik.shape
        here = torch.ones(batch, length, dtype=torch.bool) if present is None else present.reshape(batch, length).bool()
        num_states = len(self.states)
        stay = torch.eye(num_states, dtype=torch.float64)

        def step_matrix(t: int) -> torch.Tensor:  # [B, S, S]: emit a word seen as at t, and move
            moves = torch.einsum("svu,bv->bsu", self.transition, lik[:, t])
            return torch.where(here[:, t, None, None], moves, stay)

        def rescaled(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            total = values.sum(1, keepdim=True)
            return values / torch.where(total > 0, total, 1.0), total.squeeze(1)

        alpha = torch.zeros(batch, length + 1, num_states, dtype=torch.float64)
        alpha[:, 0, 0] = 1.0
        log_evidence = torch.zeros(batch, dtype=torch.float64)
        for t in range(length):
            alpha[:, t + 1], total = rescaled(torch.bmm(alpha[:, t : t + 1], step_matrix(t)).squeeze(1))
            log_evidence += total.log()
        beta = torch.ones(batch, length + 1, num_states, dtype=torch.float64)
        for t in range(length - 1, -1, -1):
            beta[:, t], _ = rescaled(torch.bmm(step_matrix(t), beta[:, t + 1].unsqueeze(2)).squeeze(2))

        # P(x_t = v, evidence) ∝ Σ_s,u alpha_t(s) transition[s, v, u] beta_t+1(u) · likelihood[t, v].
        joint = torch.einsum("bls,svu,blu->blv", alpha[:, :-1], self.transition, beta[:, 1:])
        if own:
            joint = joint * lik
        joint = joint * here.unsqueeze(-1)
        total = joint.sum(-1, keepdim=True)
        probs = joint / torch.where(total > 0, total, 1.0)
        return probs.reshape(shape), log_evidence.reshape(shape[:-2])

    def entropy(self, seq_len: int) -> float:
        """Exact entropy per token of length-L sequences, H(X_1..L) / L, in nats.

        Deterministic automaton: the state after a prefix is a function of the prefix, so
        H(X_1..L) = Σ_t E[H(next word | state at t)].
        """
        state_probs = torch.zeros(len(self.states), dtype=torch.float64)
        state_probs[0] = 1.0
        per_state = self._word_entropy_per_state()
        moves = self.transition.sum(1)
        total = 0.0
        for _ in range(seq_len):
            total += float(state_probs @ per_state)
            state_probs = state_probs @ moves
        return total / seq_len

    def entropy_rate(self) -> float:
        """lim H(X_1..L) / L: word entropy averaged under the state chain's stationary distribution."""
        moves = self.transition.sum(1)
        eye = torch.eye(len(self.states), dtype=torch.float64)
        # Solve pi (P - I) = 0 with sum(pi) = 1 as one least-squares system.
        system = torch.cat([(moves - eye).T, torch.ones(1, len(self.states), dtype=torch.float64)])
        target = torch.zeros(len(self.states) + 1, 1, dtype=torch.float64)
        target[-1] = 1.0
        stationary = torch.linalg.lstsq(system, target).solution.squeeze(1)
        return float(stationary @ self._word_entropy_per_state())

    def _word_entropy_per_state(self) -> torch.Tensor:
        p = self.emit
        return -(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))).sum(1)
