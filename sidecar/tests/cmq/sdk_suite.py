"""Drives a running queuelet through Tencent's CMQ Python SDK (qcloud-cmq-sdk-py3).

Usage: sdk_suite.py URL SECRET_ID SECRET_KEY
Prints one line per check and exits non-zero on the first failure.
"""
import sys
import threading
import time

from cmq.account import Account
from cmq.cmq_exception import CMQServerException
from cmq.queue import Message, QueueMeta
from cmq.subscription import SubscriptionMeta
from cmq.topic import Message as TopicMessage
from cmq.topic import TopicMeta

URL, SECRET_ID, SECRET_KEY = sys.argv[1:4]


def check(name, condition, detail=""):
    if not condition:
        print("FAIL %s %s" % (name, detail))
        sys.exit(1)
    print("ok   %s" % name)


def refused(call):
    """The CMQ error code a call is refused with (None when it succeeds)."""
    try:
        call()
    except CMQServerException as error:
        return error.code, error.message
    return None


def account(sign="sha1", key=SECRET_KEY, secret_id=SECRET_ID, method="POST"):
    acc = Account(URL, secret_id, key)
    acc.close_log()
    acc.set_sign(sign)
    acc.cmq_client.set_method(method)
    return acc


def queue(acc, name):
    q = acc.get_queue(name)
    q.set_encoding(False)
    return q


def queues_and_messages(acc, label):
    name = "sdk-" + label
    q = queue(acc, name)
    meta = QueueMeta()
    meta.visibilityTimeout = 40
    meta.pollingWaitSeconds = 0
    q.create(meta)
    got = q.get_attributes()
    check(label + " create/get attributes", got.visibilityTimeout == 40 and got.maxMsgSize == 65536,
          str(got))
    check(label + " create twice is refused", refused(lambda: q.create(meta))[0] == 4460)
    meta.visibilityTimeout = 50
    q.set_attributes(meta)
    check(label + " set attributes", q.get_attributes().visibilityTimeout == 50)

    sent = q.send_message(Message("hello, cmq & friends = 1"))
    check(label + " send", bool(sent.msgId))
    batch = q.batch_send_message([Message("b%d" % i) for i in range(3)])
    check(label + " batch send", len(batch) == 3 and all(m.msgId for m in batch))
    attrs = q.get_attributes()
    check(label + " active count", attrs.activeMsgNum == 4, str(attrs))

    one = q.receive_message(polling_wait_seconds=1)
    check(label + " receive", one.msgBody == "hello, cmq & friends = 1" and one.dequeueCount == 1,
          str(one))
    q.delete_message(one.receiptHandle)
    check(label + " stale handle refused",
          refused(lambda: q.delete_message(one.receiptHandle))[0] == 4430)
    many = q.batch_receive_message(16, polling_wait_seconds=1)
    check(label + " batch receive", sorted(m.msgBody for m in many) == ["b0", "b1", "b2"])
    q.batch_delete_message([m.receiptHandle for m in many])
    partial = refused(lambda: q.batch_delete_message([many[0].receiptHandle]))
    check(label + " batch delete of deleted handles", partial is not None and partial[0] == 6020,
          str(partial))

    started = time.time()
    empty = refused(lambda: q.receive_message(polling_wait_seconds=1))
    waited = time.time() - started
    check(label + " empty receive waits, then 7000",
          empty[0] == 7000 and "(10200)" in empty[1] and waited >= 0.9, "%s %.2f" % (empty, waited))

    threading.Timer(0.5, lambda: queue(account(), name).send_message(Message("late"))).start()
    started = time.time()
    late = q.receive_message(polling_wait_seconds=10)
    waited = time.time() - started
    check(label + " long poll returns early", late.msgBody == "late" and waited < 5, "%.2f" % waited)
    q.delete_message(late.receiptHandle)

    total, listed, _ = acc.list_queue(searchWord=label)
    check(label + " list queue", total == 1 and listed[0]["queueName"] == name, str(listed))
    q.delete()
    check(label + " deleted", refused(q.get_attributes)[0] == 4440)


def signatures_are_enforced():
    name = "sdk-unsigned"
    for label, acc, code in [
        ("wrong key", account(key="not-the-key"), 4100),
        ("unknown SecretId", account(secret_id="AKIDnobody"), 4100),
    ]:
        result = refused(lambda: queue(acc, name).create(QueueMeta()))
        check(label + " refused with %d" % code, result is not None and result[0] == code, str(result))
    check("refused requests created nothing",
          refused(lambda: queue(account(), name).get_attributes())[0] == 4440)


def subscribe(acc, topic, name, queue_name, tags=(), keys=()):
    meta = SubscriptionMeta()
    meta.Protocal = "queue"
    meta.Endpoint = queue_name
    meta.NotifyContentFormat = "SIMPLIFIED"
    meta.FilterTag = list(tags)
    meta.bindingKey = list(keys)
    sub = acc.get_subscription(topic, name)
    sub.create(meta)
    return sub


def bodies(q):
    try:
        got = q.batch_receive_message(16, polling_wait_seconds=0)
    except CMQServerException as error:
        if error.code == 7000:
            return []
        raise
    q.batch_delete_message([m.receiptHandle for m in got])
    return sorted(m.msgBody for m in got)


def topics_and_subscriptions(acc):
    all_q, paid_q = queue(acc, "sdk-all"), queue(acc, "sdk-paid")
    for q in (all_q, paid_q):
        q.create(QueueMeta())
    topic = acc.get_topic("sdk-events")
    topic.create(TopicMeta())
    attrs = topic.get_attributes()
    check("topic attributes", attrs.filterType == 1 and attrs.maxMsgSize == 65536, str(attrs))
    meta = TopicMeta()
    meta.maxMsgSize = 4096
    topic.set_attributes(meta)
    check("set topic attributes", topic.get_attributes().maxMsgSize == 4096)
    check("publish without subscription is 6030",
          refused(lambda: topic.publish_message(TopicMessage("x")))[0] == 6030)

    subscribe(acc, "sdk-events", "to-all", "sdk-all")
    paid = subscribe(acc, "sdk-events", "to-paid", "sdk-paid", tags=["paid"])
    got = paid.get_attributes()
    check("subscription attributes", got.FilterTag == ["paid"] and got.NotifyContentFormat == "SIMPLIFIED",
          str(got))
    total, listed, _ = topic.list_subscription()
    check("list subscriptions", total == 2 and {s["subscriptionName"] for s in listed} == {"to-all", "to-paid"},
          str(listed))

    sent = topic.publish_message(TopicMessage("order 1", ["paid", "vip"]))
    check("publish", bool(sent.msgId))
    batch = topic.batch_publish_message([TopicMessage("order 2"), TopicMessage("order 3")], msgtag=["open"])
    check("batch publish", len(batch) == 2)
    check("fan-out to every subscribed queue", bodies(all_q) == ["order 1", "order 2", "order 3"])
    check("tag filter", bodies(paid_q) == ["order 1"])

    paid.clearFilterTags()
    topic.publish_message(TopicMessage("order 4", ["other"]))
    check("cleared filter gets everything", bodies(paid_q) == ["order 4"])
    meta = SubscriptionMeta()
    meta.NotifyStrategy = ""
    meta.NotifyContentFormat = ""
    meta.FilterTag = ["refund"]
    paid.set_attributes(meta)
    check("set subscription filter", paid.get_attributes().FilterTag == ["refund"])

    check("topic with subscriptions cannot be deleted", refused(topic.delete)[0] == 4000)
    meta = SubscriptionMeta()
    meta.Protocal = "http"
    meta.Endpoint = "http://127.0.0.1:9/hook"
    meta.NotifyStrategy = "BACKOFF_RETRY"
    hook = acc.get_subscription("sdk-events", "hook")
    hook.create(meta)
    got = hook.get_attributes()
    check("http subscription", got.Protocal == "http" and got.NotifyStrategy == "BACKOFF_RETRY", str(got))
    hook.delete()

    total, listed, _ = acc.list_topic(searchWord="events")
    check("list topics", total == 1 and listed[0]["topicName"] == "sdk-events", str(listed))

    routes = acc.get_topic("sdk-routes")
    meta = TopicMeta()
    meta.filterType = 2
    routes.create(meta)
    check("routing topic", routes.get_attributes().filterType == 2)
    subscribe(acc, "sdk-routes", "eu", "sdk-paid", keys=["*.eu.#"])
    routes.publish_message(TopicMessage("eu order"), routingKey="order.eu.paid")
    check("unmatched routing key is 6030",
          refused(lambda: routes.publish_message(TopicMessage("us"), routingKey="order.us"))[0] == 6030)
    check("routing key filter", bodies(paid_q) == ["eu order"])

    for topic_name, sub_name in [("sdk-events", "to-all"), ("sdk-events", "to-paid"), ("sdk-routes", "eu")]:
        acc.get_subscription(topic_name, sub_name).delete()
    topic.delete()
    routes.delete()
    check("topics deleted", refused(topic.get_attributes)[0] == 4440)


queues_and_messages(account("sha1"), "sha1")
queues_and_messages(account("sha256"), "sha256")
queues_and_messages(account("sha1", method="GET"), "get")
signatures_are_enforced()
topics_and_subscriptions(account("sha256"))
print("all SDK checks passed")
