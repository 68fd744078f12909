"""Rehearsals: the 3 a.m. rehearsal's records (reports, per agent version) and the deploy gate's policy.

The rehearsal itself runs in a throwaway space (``tenants.rehearsals.space``); only its report lands in
the installation's database (``rehearsals``), next to the tenant's gate policy (``rehearsal_policies``).
"""
