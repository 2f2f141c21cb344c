// C++Repeat: whatever arrives on `in` is sent unchanged on `out`.
// Usage: repeat ROLE   (broker from MSGFLO_BROKER)
// Prints one readiness line before its first discovery message; exits
// cleanly on SIGTERM or Ctrl-C.
#include <msgflo/msgflo.hpp>

#include <iostream>

int main(int argc, char *argv[]) {
    if (argc < 2) {
        std::cerr << "Usage: " << argv[0] << " ROLE" << std::endl;
        return 2;
    }
    msgflo::Definition def;
    def.component = "C++Repeat";
    def.label = "Repeats input on outport unchanged";
    def.role = argv[1];
    def.inports = {{"in", "any", ""}};
    def.outports = {{"out", "any", ""}};

    try {
        std::shared_ptr<msgflo::Engine> engine = msgflo::createEngine(msgflo::EngineConfig());
        msgflo::Participant *participant = nullptr;
        participant = engine->registerParticipant(def, [&participant](msgflo::Message *msg) {
            const char *data;
            uint64_t length;
            msg->data(&data, &length);
            participant->send("out", data, length);
            msg->ack();
        });
        // SIGTERM and Ctrl-C make launch() return cleanly: the message
        // being handled is finished, the rest goes back to the queue.
        engine->stopOnSignals();
        std::cout << engine->readinessLine() << std::endl;
        engine->launch();
    } catch (const msgflo::Error &e) {
        std::cerr << "repeat: " << e.code() << ": " << e.what() << std::endl;
        return 1;
    }
    return 0;
}
