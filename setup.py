# All metadata lives in setup.cfg; this file lets older pip versions install the project too.
from setuptools import setup

setup()
