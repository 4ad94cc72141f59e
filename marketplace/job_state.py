"""A job's state box (templates/marketplace/_job_state.html): what it shows of an evaluation or a period close,
and the address it is fetched again from while the job runs (marketplace/static/marketplace/job_state.js).
The address is the job's admin state view (marketplace.admin_jobs): staff only, like the jobs themselves."""
from django.template.loader import render_to_string
from django.urls import reverse

from marketplace.models import PeriodCloseJob, SystemEvaluation
from marketplace.models.jobs import Job
from marketplace.templatetags.money import money


def evaluation_title(evaluation: SystemEvaluation) -> str:
    return f"Evaluation {evaluation.pk} of {evaluation.system.slug}"


def evaluation_summary(evaluation: SystemEvaluation) -> str:
    result = evaluation.result or {}
    if "accuracy" not in result:
        return ""
    low, high = result["interval95"]
    shares = ", ".join(f"{ref} {c['share_bp'] / 100:.1f}% (Shapley {c['shapley']:.3f})"
                       for ref, c in sorted(result.get("contributions", {}).items()))
    return (f"accuracy {result['accuracy']:.3f} [{low:.3f}, {high:.3f}] on {result['n']} items "
            f"(base model {result.get('base_accuracy', 0):.3f}); contributions: {shares or 'none'}")


def period_close_title(job: PeriodCloseJob) -> str:
    return f"Close of {job.start_date}..{job.end_date}"


def period_close_summary(job: PeriodCloseJob) -> str:
    result = job.result or {}
    if "statements" not in result:
        return ""
    verb = "closed" if result["created"] else "was already closed"
    return (f"The period {verb}: {result['statements']} statements, {result['payouts']} payouts totalling "
            f"{money(result['paid_out_minor'])}, {money(result['carried_over_minor'])} carried over.")


TITLES = {SystemEvaluation: (evaluation_title, evaluation_summary),
          PeriodCloseJob: (period_close_title, period_close_summary)}


def job_state_context(job: Job) -> dict:
    title, summary = TITLES[type(job)]
    opts = job._meta
    return {"job": job, "job_kind": opts.model_name, "title": title(job), "summary": summary(job),
            "state_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_state", args=[job.pk])}


def job_state_html(job: Job) -> str:
    return render_to_string("marketplace/_job_state.html", job_state_context(job))
