"""Running the same function for several inputs at once, one thread each."""

import threading


def in_threads(fn, inputs: list) -> list:
    """fn(x) for every x, all started together; the results in the order of the inputs."""
    results = [None] * len(inputs)

    def work(i):
        results[i] = fn(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
