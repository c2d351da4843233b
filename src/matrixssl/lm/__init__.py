"""Matrix cross-entropy for causal language-model fine-tuning (Hugging Face transformers).

The loss needs only torch. Data, training and evaluation import transformers / reasoning-gym when first used
(`pip install 'matrixssl[lm]'`), so importing this package stays light.
"""
